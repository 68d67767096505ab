"""Whether Opacus can train a model with DP-SGD, and the opt-in fix when it cannot.

DP-SGD needs per-example gradients; layers that mix examples within a batch (BatchNorm)
have none, and Opacus's ``ModuleValidator`` lists them. :func:`check_dp_module` turns its
findings into a configuration error that names each layer, or, when the config opts in
(``model.fix_for_dp``), applies Opacus's fix (BatchNorm -> GroupNorm).
"""

from __future__ import annotations

from torch import nn

from privfed.config.validation import ConfigError

__all__ = ["check_dp_module", "unsupported_layers"]


def unsupported_layers(module: nn.Module) -> list[tuple[str, str, str]]:
    """The trainable layers of ``module`` that Opacus cannot train with DP-SGD.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    list of (str, str, str)
        ``(path, type name, reason)`` of each offending layer, in module order; the path of
        the root module itself is ``"(root)"``.
    """
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    found = []
    for path, sub in trainable_modules(module):
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        for error in validator(sub) if validator is not None else ():
            found.append((path or "(root)", type(sub).__name__, str(error)))
    return found


def check_dp_module(module: nn.Module, *, fix: bool) -> nn.Module:
    """``module`` if Opacus can train it with DP-SGD, else (``fix``) Opacus's fixed copy.

    Run it before the model is bound to flat buffers (the fix builds a new module). The
    module is put in training mode (what Opacus validates).

    Parameters
    ----------
    module : torch.nn.Module
    fix : bool
        Apply ``opacus.validators.ModuleValidator.fix`` to a model Opacus cannot train
        (BatchNorm -> GroupNorm; the config's ``model.fix_for_dp``).

    Returns
    -------
    torch.nn.Module
        ``module`` itself when it is valid, else the fixed copy.

    Raises
    ------
    ConfigError
        The model has layers Opacus cannot train and ``fix`` is False (the message names
        each layer's path and type, e.g. ``features.1 (BatchNorm2d)``), or layers that the
        fix does not replace.
    """
    from opacus.validators import ModuleValidator

    module.train()
    found = unsupported_layers(module)
    if not found:
        return module
    if not fix:
        raise ConfigError(
            f"privacy.mechanism 'local' (DP-SGD): the model has layers Opacus cannot compute "
            f"per-example gradients for: {_describe(found)}. "
            f"opacus.validators.ModuleValidator.fix(model) would replace them (BatchNorm -> "
            f"GroupNorm); set model.fix_for_dp = true to opt in"
        )
    fixed = ModuleValidator.fix(module)
    fixed.train()
    remaining = unsupported_layers(fixed)
    if remaining:
        raise ConfigError(
            f"model.fix_for_dp: opacus.validators.ModuleValidator.fix left layers Opacus "
            f"cannot train with DP-SGD: {_describe(remaining)}; replace them in the model"
        )
    return fixed


def _describe(found: list[tuple[str, str, str]]) -> str:
    """``"path (Type), ... (first sentence of each distinct reason)"``."""
    layers = ", ".join(f"{path} ({kind})" for path, kind, _ in found)
    reasons = dict.fromkeys(reason.split(". ")[0].rstrip(".") for _, _, reason in found)
    return f"{layers} ({'; '.join(reasons)})"
