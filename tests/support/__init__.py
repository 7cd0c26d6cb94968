"""Shared test support, importable by every test folder and by `bench/`.

- `support.http`: the one way to point the app (or an adapter) at a mocked upstream — an
  `httpx.AsyncClient` over `httpx.MockTransport(respx_router.async_handler)`, passed in through
  `AppOverrides(http=...)`; nothing patches httpx globally.
- `support.redis`: one launcher of real `redis-server` processes on free ports (kill, restart,
  SIGSTOP/SIGCONT) for integration tests and benches.
- `support.clock`: one manual clock (monotonic and wall time that move only when told).
- `support.stub_upstream`: a stand-in Electricity Maps server on a real socket (for subprocesses).
- `support.builders`: small builders of domain values used across tests.
- `support.cli_server`: `carbon-optimizer serve` as a real subprocess for the CLI's tests.
"""
