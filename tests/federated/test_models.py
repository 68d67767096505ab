import pytest
from opacus.validators import ModuleValidator

from privfed.federated import ParamSpec
from privfed.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_is_opacus_compatible(name):
    model = build_model(name, (1, 28, 28), 10, seed=0)
    assert ModuleValidator.validate(model, strict=False) == []


def test_paper_parameter_counts_on_mnist():
    # McMahan et al. 2017: 2NN has 199,210 parameters, the CNN 1,663,370.
    assert ParamSpec.from_module(build_model("mlp", (1, 28, 28), 10, seed=0)).numel == 199_210
    assert ParamSpec.from_module(build_model("cnn", (1, 28, 28), 10, seed=0)).numel == 1_663_370


def test_same_seed_same_weights_different_seed_different():
    a, b, c = (ParamSpec.from_module(m).flatten(dict(m.named_parameters())) for m in (
        build_model("mlp", (6,), 3, seed=3), build_model("mlp", (6,), 3, seed=3),
        build_model("mlp", (6,), 3, seed=4)))
    assert (a == b).all() and not (a == c).all()


def test_unknown_model_and_cnn_on_tabular_data_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*allowed: \['cnn'"):
        build_model("resnet", (6,), 3, seed=0)
    with pytest.raises(ValueError, match="needs image input"):
        build_model("cnn", (30,), 2, seed=0)
