"""Classify by where a name comes from: every estimator of a library, imported any way.

scikit-learn is installed, so its own registry (``all_estimators``) lists what must be
recognised; statsmodels, XGBoost, LightGBM, CatBoost and PyTorch need not be: the
classification reads only source, so their snippets are enough.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from sklearn.utils import all_estimators

from pipeline.detect.classify import Classification, classify_model, symbol_kind


def classify_source(tmp_path: Path, source: str) -> Classification:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.py").write_text(source)
    return classify_model(folder)


def public_module(name: str, module: str) -> str:
    """The public package that re-exports ``name`` (``sklearn.ensemble``, not ``._forest``)."""
    parts = module.split(".")
    for cut in range(2, len(parts) + 1):
        candidate = ".".join(parts[:cut])
        if getattr(importlib.import_module(candidate), name, None) is not None:
            return candidate
    return module


REGRESSORS = all_estimators(type_filter="regressor")
CLASSIFIERS = all_estimators(type_filter="classifier")
_REGRESSOR_NAMES = {name for name, _ in REGRESSORS}
# Transformers and clusterers that are not also regressors (StackingRegressor transforms too).
OTHERS = [(n, c) for n, c in all_estimators(type_filter=["transformer", "cluster"]) if n not in _REGRESSOR_NAMES]


def test_the_registry_is_not_empty() -> None:
    assert len(REGRESSORS) > 40 and len(CLASSIFIERS) > 30 and len(OTHERS) > 40


@pytest.mark.parametrize(("name", "cls"), REGRESSORS, ids=[name for name, _ in REGRESSORS])
def test_every_sklearn_regressor_under_an_alias(tmp_path: Path, name: str, cls: type) -> None:
    module = public_module(name, cls.__module__)
    result = classify_source(tmp_path, f"from {module} import {name} as Estimator\n\nmodel = Estimator()\n")
    expected = "ann" if name == "MLPRegressor" else "regression"
    assert (result.kind, result.framework) == (expected, "scikit-learn")
    assert [e.symbol for e in result.evidence] == [f"{module}.{name}"]
    # The private home module (`sklearn.linear_model._ridge.RidgeCV`) is recognised too.
    found = symbol_kind(f"{cls.__module__}.{name}")
    assert found is not None and found[0] == expected


LINEAR_MODELS = [name for name in importlib.import_module("sklearn.linear_model").__all__ if name[:1].isupper()]


@pytest.mark.parametrize("name", LINEAR_MODELS)
def test_every_linear_model_is_regression_classifiers_included(tmp_path: Path, name: str) -> None:
    # LogisticRegression(CV), RidgeClassifier(CV), SGDClassifier, Perceptron: linear models.
    result = classify_source(tmp_path, f"import sklearn.linear_model as lm\n\nlm.{name}()\n")
    assert (result.kind, result.framework) == ("regression", "scikit-learn")


@pytest.mark.parametrize(("name", "cls"), CLASSIFIERS + OTHERS, ids=[n for n, _ in CLASSIFIERS + OTHERS])
def test_other_sklearn_estimators_are_no_evidence(name: str, cls: type) -> None:
    found = symbol_kind(f"{public_module(name, cls.__module__)}.{name}")
    home = cls.__module__.split(".")[1]
    # A linear classifier is a linear model, PLSSVD a partial-least-squares model; MLP a network.
    expected = {"linear_model": "regression", "cross_decomposition": "regression"}.get(home)
    if name == "MLPClassifier":
        expected = "ann"
    assert (found[0] if found else None) == expected, f"{name} ({cls.__module__})"


STATSMODELS = {
    "import statsmodels.api as sm\nsm.OLS(y, X)\n": "statsmodels.api.OLS",
    "import statsmodels.api as sm\nsm.WLS(y, X)\n": "statsmodels.api.WLS",
    "import statsmodels.api as sm\nsm.GLM(y, X, family=sm.families.Gamma())\n": "statsmodels.api.GLM",
    "import statsmodels.api as sm\nsm.Logit(y, X)\n": "statsmodels.api.Logit",
    "import statsmodels.api as sm\nsm.ZeroInflatedPoisson(y, X)\n": "statsmodels.api.ZeroInflatedPoisson",
    "import statsmodels.api as sm\nsm.PHReg(t, X)\n": "statsmodels.api.PHReg",
    "import statsmodels.api as sm\nsm.OLS.from_formula('y ~ x', df)\n": "statsmodels.api.OLS.from_formula",
    "import statsmodels.api as sm\nsm.regression.linear_model.GLSAR(y, X)\n": (
        "statsmodels.api.regression.linear_model.GLSAR"
    ),
    "import statsmodels.api as sm\nsm.genmod.GEE(y, X, groups)\n": "statsmodels.api.genmod.GEE",
    "import statsmodels.api as sm\nsm.tsa.ARIMA(y, order=(1, 0, 0))\n": "statsmodels.api.tsa.ARIMA",
    "import statsmodels.api as sm\nsm.tsa.statespace.SARIMAX(y)\n": "statsmodels.api.tsa.statespace.SARIMAX",
    "import statsmodels.formula.api as smf\nsmf.ols('y ~ x', df)\n": "statsmodels.formula.api.ols",
    "import statsmodels.formula.api as smf\nsmf.mixedlm('y ~ x', df, groups=g)\n": ("statsmodels.formula.api.mixedlm"),
    "from statsmodels.formula.api import quantreg as qr\nqr('y ~ x', df)\n": "statsmodels.formula.api.quantreg",
    "from statsmodels.regression.linear_model import OLS as LinearModel\nLinearModel(y, X)\n": (
        "statsmodels.regression.linear_model.OLS"
    ),
    "from statsmodels.genmod.api import GLM\nGLM(y, X)\n": "statsmodels.genmod.api.GLM",
    "from statsmodels.discrete.discrete_model import NegativeBinomialP\nNegativeBinomialP(y, X)\n": (
        "statsmodels.discrete.discrete_model.NegativeBinomialP"
    ),
    "from statsmodels.robust.robust_linear_model import RLM\nRLM(y, X)\n": (
        "statsmodels.robust.robust_linear_model.RLM"
    ),
    "from statsmodels.tsa.api import ExponentialSmoothing as ES\nES(y)\n": "statsmodels.tsa.api.ExponentialSmoothing",
    "from statsmodels.tsa.arima.model import ARIMA\nARIMA(y)\n": "statsmodels.tsa.arima.model.ARIMA",
    "from statsmodels.tsa.vector_ar.var_model import VAR\nVAR(y)\n": "statsmodels.tsa.vector_ar.var_model.VAR",
    "from statsmodels.miscmodels.ordinal_model import OrderedModel\nOrderedModel(y, X)\n": (
        "statsmodels.miscmodels.ordinal_model.OrderedModel"
    ),
}


@pytest.mark.parametrize("source", sorted(STATSMODELS))
def test_statsmodels_models_by_home_module(tmp_path: Path, source: str) -> None:
    result = classify_source(tmp_path, source)
    assert (result.kind, result.framework) == ("regression", "statsmodels")
    assert STATSMODELS[source] in {e.symbol for e in result.evidence}


@pytest.mark.parametrize(
    "symbol",
    [
        "statsmodels.api.add_constant",
        "statsmodels.api.families.Poisson",  # a GLM family, not a model
        "statsmodels.genmod.families.links.Log",
        "statsmodels.api.cov_struct.Exchangeable",
        "statsmodels.api.PCA",
        "statsmodels.api.ProbPlot",
        "statsmodels.api.MICEData",
        "statsmodels.api.stats.DescrStatsW",
        "statsmodels.api.tsa.STL",
        "statsmodels.api.tsa.ArmaProcess",
        "statsmodels.api.tsa.acf",
        "statsmodels.stats.diagnostic.het_breuschpagan",
        "statsmodels.api.datasets.get_rdataset",
        "statsmodels.api.NotYetKnownModel",
    ],
)
def test_statsmodels_helpers_are_no_evidence(symbol: str) -> None:
    assert symbol_kind(symbol) is None


BOOSTING = {
    "import xgboost as xgb\nxgb.XGBRegressor()\n": "xgboost.XGBRegressor",
    "import xgboost as xgb\nxgb.XGBRFRegressor()\n": "xgboost.XGBRFRegressor",
    "from xgboost.sklearn import XGBRegressor as Booster\nBooster()\n": "xgboost.sklearn.XGBRegressor",
    "import xgboost as xgb\nbooster = xgb.train(params, xgb.DMatrix(X, y))\n": "xgboost.train",
    "import lightgbm as lgb\nlgb.LGBMRegressor()\n": "lightgbm.LGBMRegressor",
    "import lightgbm\nlightgbm.train(params, lightgbm.Dataset(X, y))\n": "lightgbm.train",
    "from catboost import CatBoostRegressor\nCatBoostRegressor()\n": "catboost.CatBoostRegressor",
    "import catboost\ncatboost.train(pool)\n": "catboost.train",
}


@pytest.mark.parametrize("source", sorted(BOOSTING))
def test_gradient_boosting_regressors(tmp_path: Path, source: str) -> None:
    result = classify_source(tmp_path, source)
    assert (result.kind, result.framework) == ("regression", "scikit-learn")
    assert [e.symbol for e in result.evidence] == [BOOSTING[source]]


@pytest.mark.parametrize(
    "symbol", ["xgboost.XGBClassifier", "xgboost.DMatrix", "lightgbm.Dataset", "catboost.Pool", "lightgbm.LGBMRanker"]
)
def test_gradient_boosting_non_regressors(symbol: str) -> None:
    assert symbol_kind(symbol) is None


LAYERS = {
    # Pooling alone is a CNN's mark; so is any convolution, however it is imported.
    "import tensorflow as tf\ntf.keras.layers.MaxPooling2D()\n": ("cnn", "keras", "keras.layers.MaxPooling2D"),
    "from keras import layers as kl\nkl.AveragePooling1D(2)\n": ("cnn", "keras", "keras.layers.AveragePooling1D"),
    "from tensorflow.keras.layers import GlobalAveragePooling2D as GAP\nGAP()\n": (
        "cnn",
        "keras",
        "keras.layers.GlobalAveragePooling2D",
    ),
    "from tensorflow.keras.layers import Conv2D as C\nC(8, 3)\n": ("cnn", "keras", "keras.layers.Conv2D"),
    "import tensorflow as tf\ntf.compat.v1.keras.layers.Conv2D(8, 3)\n": ("cnn", "keras", "keras.layers.Conv2D"),
    "import tf_keras\ntf_keras.layers.Dense(3)\n": ("ann", "keras", "keras.layers.Dense"),
    "import keras\nkeras.layers.Embedding(100, 8)\nkeras.layers.GlobalAveragePooling1D()\nkeras.layers.Dense(1)\n": (
        "ann",
        "keras",
        "keras.layers.Dense",
    ),
    "import torch.nn as nn\nnn.MaxPool2d(2)\nnn.Linear(4, 2)\n": ("cnn", "pytorch", "torch.nn.MaxPool2d"),
    "from torch.nn import Conv2d as C\nC(1, 1, 3)\n": ("cnn", "pytorch", "torch.nn.Conv2d"),
    "import torch\ntorch.nn.modules.conv.Conv1d(1, 1, 3)\n": ("cnn", "pytorch", "torch.nn.modules.conv.Conv1d"),
    "import torch.nn.functional as F\nF.max_pool2d(x, 2)\n": ("cnn", "pytorch", "torch.nn.functional.max_pool2d"),
    "import torch\ntorch.conv2d(x, w)\n": ("cnn", "pytorch", "torch.conv2d"),
    "from torch.ao.nn.quantized import Conv2d\nConv2d(1, 1, 3)\n": ("cnn", "pytorch", "torch.ao.nn.quantized.Conv2d"),
    "import torch.nn as nn\nnn.AdaptiveAvgPool1d(1)\nnn.LazyLinear(2)\n": ("ann", "pytorch", "torch.nn.LazyLinear"),
    "import torch.nn.functional as F\nF.bilinear(a, b, w)\n": ("ann", "pytorch", "torch.nn.functional.bilinear"),
}


@pytest.mark.parametrize("source", sorted(LAYERS))
def test_keras_and_torch_layers_by_module(tmp_path: Path, source: str) -> None:
    kind, framework, symbol = LAYERS[source]
    result = classify_source(tmp_path, source)
    assert (result.kind, result.framework) == (kind, framework)
    assert result.evidence[0].symbol == symbol


@pytest.mark.parametrize(
    "symbol",
    [
        "keras.ops.conv",  # an op, not a layer module
        "keras.losses.Huber",
        "keras.layers.GlobalMaxPooling1D",
        "torch.optim.SGD",
        "torch.utils.data.DataLoader",
        "torch.nn.AdaptiveMaxPool1d",
        "mylib.layers.Conv2D",  # a user's class of the same name is not Keras's
    ],
)
def test_layer_look_alikes_are_no_evidence(symbol: str) -> None:
    assert symbol_kind(symbol) is None
