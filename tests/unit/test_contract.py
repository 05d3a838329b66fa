"""The contract's values have one home (teamu_assets/contract.py): what reads them elsewhere agrees with it."""

from __future__ import annotations

import yaml

from teamu_assets.contract import DBT_VARS, HISTORY_LENGTH
from teamu_assets.model.features import FeatureLayout
from teamu_assets.model.params import TrainParams
from teamu_assets.settings import DBT_PROJECT_DIR


def test_dbt_project_defaults_equal_the_contract() -> None:
    """A bare `dbt build` (no --vars) builds the same marts as the code location, which passes DBT_VARS."""
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert {name: project["vars"][name] for name in DBT_VARS} == DBT_VARS


def test_the_model_pads_histories_to_the_marts_length() -> None:
    assert TrainParams().history_length == FeatureLayout().history_length == HISTORY_LENGTH
