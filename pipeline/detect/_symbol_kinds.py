"""What a fully qualified name is evidence of: decided by the module it comes from.

``pipeline.detect._ast_symbols`` resolves every call and base class to where it was imported from
(``from sklearn.linear_model import RidgeCV as R; R()`` is ``sklearn.linear_model.RidgeCV``);
the rules here read that path, not a list of estimator names, so an estimator added to a
library next year is recognised by the package it lives in.

- scikit-learn: every class of ``sklearn.linear_model`` (the ``*CV`` variants, and the linear
  classifiers too: ``LogisticRegression``, ``RidgeClassifier``, ``SGDClassifier`` are linear
  models, and a linear model is this project's ``regression`` kind); every class of
  ``sklearn.kernel_ridge``, ``sklearn.isotonic`` and ``sklearn.cross_decomposition``; the
  ``*SVR`` classes of ``sklearn.svm``; and anywhere in ``sklearn`` a class whose name starts or
  ends with ``Regressor``/``Regression`` (``RandomForestRegressor``, ``RegressorChain``,
  ``RegressorMixin``, the base of a hand-written regressor). ``sklearn.neural_network.MLP*``
  is ``ann``. Other classifiers (``RandomForestClassifier``, ``SVC``...) are no evidence.
- statsmodels: every model class, found by its home module (``regression``, ``genmod``,
  ``discrete``, ``robust``, ``gam``, ``miscmodels``, ``duration.hazard_regression`` and the
  model modules of ``tsa``), and every function of the formula API (``smf.ols``). The flat
  namespaces ``statsmodels.api`` and ``statsmodels.tsa.api`` are first mapped back to the
  module each name comes from, so ``sm.OLS`` counts and ``sm.PCA``, ``sm.ProbPlot``,
  ``sm.families.Poisson`` or ``sm.add_constant`` do not.
- XGBoost, LightGBM, CatBoost: their ``*Regressor`` classes and their native ``train``
  functions (whose default objective is a regression in all three). Their framework is
  ``scikit-learn``: the image's scikit-learn layer, the library itself coming from the
  model's requirements.
- Keras (``keras.*``, ``tensorflow.keras.*``, ``tf_keras.*``): in a ``layers`` module, the
  convolutions and the pooling layers are ``cnn`` and ``Dense``/``EinsumDense`` are ``ann``;
  every class of ``keras.applications`` is a convolutional backbone.
- PyTorch (``torch.nn.*``, ``torch.nn.functional.*``, ``torch.ao.nn.*``, the ``torch.conv2d``
  ops): convolutions and pooling are ``cnn``, ``Linear``/``LazyLinear``/``Bilinear`` are
  ``ann``; a convolutional ``torchvision.models`` constructor is ``cnn``.

One-dimensional *global* pooling (``GlobalAveragePooling1D``, ``AdaptiveAvgPool1d``) is no
evidence: it averages a token sequence in text and transformer models as often as it ends a
CNN, and a 1-D CNN is recognised by its convolutions anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_KERAS_PREFIXES = (
    "tensorflow.compat.v1.keras.",
    "tensorflow.compat.v2.keras.",
    "tensorflow.python.keras.",
    "tensorflow.keras.",
    "tf_keras.",
)
_KERAS_CONV = re.compile(r"^(Separable|Depthwise)?Conv(olution)?[123]D(Transpose)?$|^ConvLSTM[123]D$")
_KERAS_POOL = re.compile(r"^(Max|Average|Avg)Pool(ing)?[123]D$|^Global(Max|Average|Avg)Pool(ing)?[23]D$")
_TORCH_CONV = re.compile(r"^(Lazy)?Conv(Transpose)?[123]d$|^conv(_transpose)?[123]d$")
_TORCH_POOL = re.compile(
    r"^(Max|Avg|LP|FractionalMax)Pool[123]d$|^Adaptive(Max|Avg)Pool[23]d$"
    r"|^(max|avg|lp|fractional_max)_pool[123]d(_with_indices)?$|^adaptive_(max|avg)_pool[23]d(_with_indices)?$"
)
_TORCHVISION_CNN = re.compile(
    r"^(alexnet|convnext|densenet|efficientnet|googlenet|inception|mnasnet|mobilenet|regnet"
    r"|resnet|resnext|shufflenet|squeezenet|vgg|wide_resnet)[a-z0-9_]*$"
)
_SKLEARN_REGRESSION_MODULES = {"linear_model", "kernel_ridge", "isotonic", "cross_decomposition"}

# statsmodels.api and statsmodels.tsa.api re-export classes from their home modules
# (statsmodels 0.14/0.15); a name not listed keeps its api path and is no evidence.
_STATSMODELS_API = {
    "regression.linear_model": "OLS GLS WLS GLSAR",
    "regression.recursive_ls": "RecursiveLS",
    "regression.quantile_regression": "QuantReg",
    "regression.mixed_linear_model": "MixedLM",
    "regression.rolling": "RollingOLS RollingWLS",
    "genmod.generalized_linear_model": "GLM",
    "genmod.generalized_estimating_equations": "GEE OrdinalGEE NominalGEE",
    "genmod.bayes_mixed_glm": "BinomialBayesMixedGLM PoissonBayesMixedGLM",
    "robust.robust_linear_model": "RLM",
    "discrete.discrete_model": "Poisson Logit Probit MNLogit NegativeBinomial GeneralizedPoisson NegativeBinomialP",
    "discrete.count_model": "ZeroInflatedPoisson ZeroInflatedGeneralizedPoisson ZeroInflatedNegativeBinomialP",
    "discrete.conditional_models": "ConditionalLogit ConditionalMNLogit ConditionalPoisson",
    "gam.generalized_additive_model": "GLMGam",
    "miscmodels.ordinal_model": "OrderedModel",
    "duration.hazard_regression": "PHReg",
    "duration.survfunc": "SurvfuncRight",
    "imputation.mice": "MICE MICEData",
    "imputation.bayes_mi": "BayesGaussMI MI",
    "graphics.gofplots": "ProbPlot",
    "multivariate.pca": "PCA",
    "multivariate.manova": "MANOVA",
    "multivariate.factor": "Factor",
}
_STATSMODELS_TSA_API = {
    "tsa.ar_model": "AR AutoReg",
    "tsa.ardl": "ARDL UECM",
    "tsa.arima.model": "ARIMA",
    "tsa.arima_process": "ArmaProcess",
    "tsa.exponential_smoothing.ets": "ETSModel",
    "tsa.forecasting.stl": "STLForecast",
    "tsa.holtwinters": "ExponentialSmoothing Holt SimpleExpSmoothing",
    "tsa.regime_switching.markov_autoregression": "MarkovAutoregression",
    "tsa.regime_switching.markov_regression": "MarkovRegression",
    "tsa.seasonal": "STL MSTL",
    "tsa.statespace.dynamic_factor": "DynamicFactor",
    "tsa.statespace.dynamic_factor_mq": "DynamicFactorMQ",
    "tsa.statespace.sarimax": "SARIMAX",
    "tsa.statespace.structural": "UnobservedComponents",
    "tsa.statespace.varmax": "VARMAX",
    "tsa.vector_ar.svar_model": "SVAR",
    "tsa.vector_ar.var_model": "VAR",
    "tsa.vector_ar.vecm": "VECM",
}
_STATSMODELS_HOMES = {
    "api": {name: home for home, names in _STATSMODELS_API.items() for name in names.split()},
    "tsa.api": {name: home for home, names in _STATSMODELS_TSA_API.items() for name in names.split()},
}
# Sub-namespaces bound on statsmodels.api / statsmodels.tsa.api (`sm.families`, `sm.tsa.var`).
_STATSMODELS_SUBMODULES = {
    "api": {
        "genmod": "genmod.api", "tsa": "tsa.api", "formula": "formula.api", "families": "genmod.families",
        "cov_struct": "genmod.cov_struct", "graphics": "graphics.api", "stats": "stats.api",
        "nonparametric": "nonparametric.api", "emplike": "emplike.api", "duration": "duration.api",
        "multivariate": "multivariate.api",
    },
    "tsa.api": {"var": "tsa.vector_ar", "arima": "tsa.arima.api", "statespace": "tsa.statespace.api"},
}  # fmt: skip
_STATSMODELS_MODEL_PACKAGES = {"regression", "genmod", "discrete", "robust", "gam", "miscmodels"}
_STATSMODELS_NOT_MODELS = {"families", "cov_struct"}
_STATSMODELS_TSA_MODELS = {
    "ar_model", "ardl", "arima", "arima_model", "holtwinters", "exponential_smoothing", "statespace",
    "regime_switching", "vector_ar", "forecasting",
}  # fmt: skip
_BOOSTING = {"xgboost", "lightgbm", "catboost"}


def symbol_kind(symbol: str) -> tuple[str, str, str] | None:
    """What a fully qualified name is evidence of.

    Args:
        symbol: e.g. ``tensorflow.keras.layers.Conv2D`` or ``sklearn.linear_model.Ridge``.

    Returns:
        ``(kind, framework, display name)``, or ``None`` when the name says nothing of kind.

    Example:
        >>> symbol_kind("tensorflow.keras.layers.Conv2D")
        ('cnn', 'keras', 'keras.layers.Conv2D')
    """
    for prefix in _KERAS_PREFIXES:
        if symbol.startswith(prefix):
            symbol = "keras." + symbol.removeprefix(prefix)
    parts = symbol.split(".")
    rule = _RULES.get(parts[0])
    if rule is None:
        return None
    framework, kind_of = rule
    kind = kind_of(parts)
    return (kind, framework, symbol) if kind else None


def _split_class(parts: list[str]) -> tuple[list[str], str] | None:
    """(module path, class) at the first CamelCase part: ``Ridge`` in ``...Ridge.fit``."""
    for index, part in enumerate(parts[1:], start=1):
        if part[:1].isupper():
            return parts[1:index], part
    return None


def _keras_kind(parts: list[str]) -> str | None:
    found = _split_class(parts)
    if found is None:
        return None
    module, name = found
    if "applications" in module:
        return "cnn"  # every keras.applications backbone is convolutional
    if "layers" not in module:
        return None
    if _KERAS_CONV.match(name) or _KERAS_POOL.match(name):
        return "cnn"
    return "ann" if name in ("Dense", "EinsumDense") else None


def _torch_kind(parts: list[str]) -> str | None:
    found = _split_class(parts)
    module, name = found if found else (parts[1:-1], parts[-1])  # F.conv2d: a function
    if module and "nn" not in module:
        return None  # torch.conv2d and torch.max_pool2d are the ops behind torch.nn
    if _TORCH_CONV.match(name) or _TORCH_POOL.match(name):
        return "cnn"
    if name in ("Linear", "LazyLinear", "Bilinear") or (
        module[-1:] == ["functional"] and name in ("linear", "bilinear")
    ):
        return "ann"
    return None


def _torchvision_kind(parts: list[str]) -> str | None:
    is_backbone = parts[1:2] == ["models"] and _TORCHVISION_CNN.match(parts[-1])
    return "cnn" if is_backbone else None


def _sklearn_kind(parts: list[str]) -> str | None:
    found = _split_class(parts)
    if found is None or not found[0]:
        return None
    module, name = found
    if module[0] == "neural_network" and name.startswith("MLP"):
        return "ann"  # checked before the *Regressor rule: an MLPRegressor is a network
    regression = (
        module[0] in _SKLEARN_REGRESSION_MODULES
        or (module[0] == "svm" and name.endswith("SVR"))
        or name.startswith(("Regressor", "Regression"))
        or name.endswith(("Regressor", "Regression"))
    )
    return "regression" if regression else None


def _statsmodels_kind(parts: list[str]) -> str | None:
    path = _statsmodels_home(parts[1:])
    if path[:2] == ["formula", "api"] and len(path) > 2:
        return "regression"  # smf.ols, smf.glm...: the formula API holds only model constructors
    found = _split_class(["statsmodels", *path])
    if found is None or not found[0] or _STATSMODELS_NOT_MODELS & set(found[0]):
        return None
    module = found[0]
    is_model = (
        module[0] in _STATSMODELS_MODEL_PACKAGES
        or module[:2] == ["duration", "hazard_regression"]
        or (module[0] == "tsa" and module[1:2] and module[1] in _STATSMODELS_TSA_MODELS)
    )
    return "regression" if is_model else None


def _statsmodels_home(path: list[str]) -> list[str]:
    """``api.OLS`` -> ``regression.linear_model.OLS``; ``api.tsa.ARIMA`` -> ``tsa.arima.model.ARIMA``."""
    for _ in range(4):  # api -> tsa.api -> a class: never deeper
        for namespace in ("tsa.api", "api"):
            size = namespace.count(".") + 1
            if ".".join(path[:size]) != namespace or len(path) <= size:
                continue
            name = path[size]
            home = _STATSMODELS_HOMES[namespace].get(name)
            if home is not None:
                path = [*home.split("."), *path[size:]]
            elif name[:1].isupper():
                return path  # a class this table does not know: left under api, no evidence
            else:  # `sm.families` is genmod.families; `sm.regression` is statsmodels.regression
                package = namespace.split(".")[:-1]
                sub = _STATSMODELS_SUBMODULES[namespace].get(name, ".".join([*package, name]))
                path = [*sub.split("."), *path[size + 1 :]]
            break
        else:
            return path
    return path


def _boosting_kind(parts: list[str]) -> str | None:
    found = _split_class(parts)
    if found is not None:
        return "regression" if found[1].endswith("Regressor") else None
    # xgb.train, lgb.train, catboost.train (and xgboost.training.train, lightgbm.engine.train).
    return "regression" if parts[-1] == "train" else None


_RULES: dict[str, tuple[str, Callable[[list[str]], str | None]]] = {
    "keras": ("keras", _keras_kind),
    "torch": ("pytorch", _torch_kind),
    "torchvision": ("pytorch", _torchvision_kind),
    "sklearn": ("scikit-learn", _sklearn_kind),
    "statsmodels": ("statsmodels", _statsmodels_kind),
    **{package: ("scikit-learn", _boosting_kind) for package in _BOOSTING},
}
