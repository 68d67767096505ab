"""Experiments: sweeps over configurations, their results tables and reports.

Stands above ``attacks`` and ``privfed``; registers the ``privfed sweep`` and
``privfed report`` commands through the ``privfed.commands`` entry-point group.
"""
