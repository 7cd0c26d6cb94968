"""What the carbon data behind an option can support: `forecast`, `history`, `replay` or `flat`.

Why: with no key, most cloud regions have only a flat annual average, so every start ties and
"best" is simply *now*; 19 zones replay the 2023 curve of the same week. A caller must be able to
tell "now is greenest" from "no time data", so every option names the kind of data it rests on,
derived from the per-point source labels the carbon chain already writes (providers/carbon/chain.py):

| kind       | labels                                                                    |
|------------|---------------------------------------------------------------------------|
| `history`  | `<source>:history`, `<source>:actual` — measured values                  |
| `forecast` | `<source>:forecast` and any other live label — the source's prediction    |
| `replay`   | `fallback:replay-<year>` — the bundled hourly curve of that year, same week; |
|            | `forecast:<model>` — our forecaster, fitted on that bundled history        |
| `flat`     | `fallback:annual-<year>`, `<source>:latest`, `…(extended)` — one value held |

`(stale)` is stripped first: a stale forecast is still a forecast, only older. Our own forecaster
(`forecast:profile-ar`, providers/carbon/forecast.py) is fitted on the bundled 2023 history
offline, so what it can support about today's grid is what the replay supports: it ranks as
`replay`, and its options say which model and backtested error they rest on
(`uncertainty.forecast`). With a live source it is fitted on the zone's measured history
(providers/carbon/live_history.py); the label does not say which, so the caller may pass
`fitted_on` (zone → `live` | `mixed` | `replay`, the forecast band's `history`): a fit on wholly
measured history ranks as `forecast`, a mixed or replayed one stays `replay`. Without it every
`forecast:` hour ranks as `replay` (the cautious reading).

A window that mixes kinds is labelled with its **weakest** kind, in the order
flat < replay < forecast < history, because the ranking can be no better than the worst hour
that went into its mean (a forecast that runs out into a flat annual average cannot tell the
last hours apart).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carbon_optimizer.domain.plan import Option

FLAT = "flat"
REPLAY = "replay"
FORECAST = "forecast"
HISTORY = "history"
KINDS: tuple[str, ...] = (FLAT, REPLAY, FORECAST, HISTORY)  # weakest first
_STRENGTH = {kind: i for i, kind in enumerate(KINDS)}


# zone → what our forecaster's fit for it used: "live", "mixed", "replay" (None: unknown → replay)
FittedOn = Callable[[str], str | None]
LIVE_FIT = "live"


def kind_of(label: str, fitted_on: str | None = None) -> str:
    """The data kind of one source label (see the module table); `fitted_on` for `forecast:` ones."""
    name = label.replace("(stale)", "")
    if name.endswith("(extended)") or name.endswith(":latest") or ":annual-" in name:
        return FLAT
    if name.startswith("forecast:"):
        return FORECAST if fitted_on == LIVE_FIT else REPLAY
    if ":replay-" in name:
        return REPLAY
    if name.endswith(":history") or name.endswith(":actual"):
        return HISTORY
    return FORECAST


def weakest(labels: Iterable[str], fitted_on: str | None = None) -> str:
    """The weakest kind among `labels` (`flat` when there are none: nothing to vary)."""
    return _weakest(labels if isinstance(labels, tuple) else tuple(labels), fitted_on)


@lru_cache(maxsize=4096)
def _weakest(labels: tuple[str, ...], fitted_on: str | None) -> str:
    # Memoised: every answer asks this for each location's labels, drawn from a few dozen.
    kinds = [kind_of(label, fitted_on) for label in labels]
    return min(kinds, key=_STRENGTH.__getitem__) if kinds else FLAT


def summary(kinds: Iterable[str]) -> dict[str, int]:
    """How many locations rest on each kind, every kind listed (0 when absent)."""
    counts = dict.fromkeys(KINDS, 0)
    for kind in kinds:
        counts[kind] += 1
    return counts


def _label(option: Option) -> str:
    """How a location reads in a warning: `aws/us-east-1`, or the bare zone `DE`."""
    location = option.location
    return location.key if location.is_cloud else location.zone


def _names(keys: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(keys))


def data_quality_warnings(
    options: Sequence[Option], starts_can_move: bool, fitted_on: FittedOn | None = None
) -> list[str]:
    """Warnings for an answer whose ranking rests on replayed or flat data, or mixes kinds.

    `starts_can_move` is False when the window allows one start only: then no start was chosen, and
    flat or replayed data cannot have decided it. `fitted_on` says what our forecaster's fit of a
    zone used (module docstring); without it a `forecast:` window is read as fitted on the replay.
    """
    out: list[str] = []
    if not options:
        return out
    if starts_can_move:
        flat = [_label(o) for o in options if o.carbon_data == FLAT]
        if flat:
            verb = "its data has" if len(set(flat)) == 1 else "their data has"
            out.append(
                f"start time cannot be optimised for {_names(flat)}: {verb} no time variation "
                "(a flat annual average or a held value), so the start shown is simply the earliest"
            )
        best = options[0]
        if best.carbon_data == REPLAY:
            year = next(
                (
                    part.split("replay-", 1)[1][:4]
                    for part in best.carbon_source.split("+")
                    if "replay-" in part
                ),
                "bundled",
            )
            if any(part.startswith("forecast:") for part in best.carbon_source.split("+")):
                fit = fitted_on(best.location.zone) if fitted_on is not None else None
                if fit == "mixed":
                    what = "measured history with gaps filled from the bundled 2023 data"
                elif fit == LIVE_FIT:
                    what = "measured history"
                else:
                    what = "the bundled 2023 data"
                out.append(
                    f"best start for {_label(best)} comes from our forecast fitted on {what} "
                    "(see its uncertainty), not from a live forecast"
                )
            else:
                where = f"the {year} curve of the same week"
                out.append(f"best start for {_label(best)} comes from {where}, not a forecast")
    shown = {_label(o): o.carbon_data for o in options}
    if len(set(shown.values())) > 1:
        groups = "; ".join(
            f"{kind}: {_names(k for k, v in shown.items() if v == kind)}"
            for kind in reversed(KINDS)
            if kind in shown.values()
        )
        out.append(
            f"locations on different kinds of carbon data are ranked against each other ({groups}): "
            "part of their difference comes from the data, not the grid"
        )
    return out
