"""PrivacyConfig rejects bad input with errors that name the field and the allowed values."""

import math

import pytest

from privfed.privacy import PrivacyConfig


def test_default_is_non_private():
    assert PrivacyConfig().mechanism == "none"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mechanism": "local", "epsilon": -1.0}, r"privacy\.epsilon must be > 0.*-1\.0"),
        ({"mechanism": "local", "epsilon": 0.0}, r"privacy\.epsilon must be > 0.*0\.0"),
        ({"mechanism": "local", "epsilon": 1.0, "delta": 0.0},
         r"privacy\.delta must be in \(0, 1\)"),
        ({"mechanism": "local", "epsilon": 1.0, "delta": 1.0},
         r"privacy\.delta must be in \(0, 1\)"),
        ({"mechanism": "local", "noise_multiplier": -0.5},
         r"privacy\.noise_multiplier.*>= 0.*-0\.5"),
        ({"mechanism": "local", "noise_multiplier": 1.0, "max_grad_norm": 0.0},
         r"privacy\.max_grad_norm must be > 0.*0\.0"),
        ({"mechanism": "central", "noise_multiplier": 1.0, "clip_norm": -1.0},
         r"privacy\.clip_norm must be > 0.*-1\.0"),
        ({"mechanism": "central", "noise_multiplier": 1.0, "clip_norm": math.inf},
         r"privacy\.clip_norm = inf is allowed only with privacy\.noise_multiplier = 0"),
        ({"mechanism": "dp"},
         r"privacy\.mechanism: unknown value 'dp'; allowed: \['none', 'local'"),
        ({"mechanism": "local", "epsilon": 1.0, "accountant": "moments"},
         r"privacy\.accountant: unknown value 'moments'; allowed: \['pld', 'prv', 'rdp'\]"),
        ({"mechanism": "local"}, r"needs exactly one of privacy\.epsilon and privacy\.noise_mult"),
        ({"mechanism": "local", "epsilon": 1.0, "noise_multiplier": 1.0}, r"exactly one of"),
        ({"epsilon": 1.0}, r"privacy\.mechanism is 'none'"),
        ({"mechanism": "local", "epsilon": 1.0, "adaptive_clipping": True},
         r"privacy\.adaptive_clipping applies to mechanisms 'central' and 'distributed'"),
        ({"mechanism": "central", "epsilon": 1.0, "noise": "skellam"},
         r"privacy\.noise 'skellam' applies only to mechanism 'distributed'"),
        ({"mechanism": "central", "epsilon": 1.0, "target_quantile": 1.5},
         r"privacy\.target_quantile must be in \[0, 1\], got 1\.5"),
        ({"mechanism": "distributed", "epsilon": 1.0, "min_surviving_clients": 0},
         r"privacy\.min_surviving_clients must be >= 1, got 0"),
    ],
)
def test_bad_values_raise_with_the_field_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrivacyConfig(**kwargs)


def test_inf_clip_with_zero_noise_is_allowed():
    config = PrivacyConfig(mechanism="central", noise_multiplier=0.0, clip_norm=math.inf)
    assert config.user_level
