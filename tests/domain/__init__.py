"""Pure unit and property tests of carbon_optimizer.domain: no I/O, no fakes needed."""
