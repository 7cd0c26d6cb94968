"""The bundled forecast error model (`data/forecast_error_model.json`), loaded once per process.

Why a file: provider forecasts (Electricity Maps) carry no interval, so the service needs an error
model by lead time to give them one. It is estimated by the backtest (`bench/bench_forecast.py
--write-error-model`), which writes its provenance into the file; the domain code that uses it
(`domain/uncertainty.py`) stays pure and takes the parsed table as an argument.
"""

from __future__ import annotations

import functools
import json

from carbon_optimizer.domain.uncertainty import ErrorModel
from carbon_optimizer.providers.catalog import read_text

ERROR_MODEL_FILE = "forecast_error_model.json"


@functools.cache
def load_error_model() -> ErrorModel:
    """Parse the shipped table (raises ValueError if it is malformed: a packaging bug)."""
    return ErrorModel.from_json(json.loads(read_text(ERROR_MODEL_FILE)))
