"""YAML configs with documented keys and ``--key=value`` overrides.

A config is ``common/base_config.yaml`` (keys every model has: runtime, data root, schedule,
checkpoints, logging, eval/predict/export plumbing) plus the model's ``default_config.yaml``. Each file
holds up to three YAML documents separated by ``---``:

1. values (flat mapping ``key: default``),
2. help text for every key (required: an undocumented key is an error; a model file may give a base key
   another default without repeating its help),
3. allowed choices for some keys (optional).

Nothing is parsed at import time; entry points call :func:`load_config` with ``sys.argv[1:]``.

    python -m common.config known MODEL/default_config.yaml --key=value ...

prints, one per line, the arguments whose key that model has (``scripts/run_eval.sh all`` uses it);
``check`` instead of ``known`` loads the config with the arguments and ends in one ``error:`` line and exit
code 2 when one is invalid (``scripts/run_distribute_train.sh`` uses it before launching the workers).
"""
import os
import sys
from dataclasses import dataclass

import yaml

__all__ = ["BASE_CONFIG", "Config", "ConfigError", "load_config", "parse_overrides", "known_arguments"]

BASE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base_config.yaml")


class ConfigError(ValueError):
    """A config file or a command-line override is invalid."""


class Config(dict):
    """A flat dict with attribute access: ``cfg.lr`` is ``cfg["lr"]``."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}; valid keys: {', '.join(sorted(self))}") from None

    def __setattr__(self, key, value):
        if key not in self:
            raise AttributeError(f"config has no key {key!r}; valid keys: {', '.join(sorted(self))}")
        self[key] = value

    def __getstate__(self):
        return dict(self)

    def __setstate__(self, state):
        self.update(state)

    help = None  # filled by load_config: {key: help text}
    choices = None  # filled by load_config: {key: [allowed values]}

    def describe(self):
        """One line per key: ``key = value``."""
        width = max(len(k) for k in self) if self else 0
        return "\n".join(f"{k:<{width}} = {self[k]!r}" for k in self)

    def usage(self):
        """Every key with its default, allowed values and help text (what ``--help`` prints)."""
        lines = []
        for key, value in self.items():
            allowed = f"  {{{', '.join(map(str, self.choices[key]))}}}" if key in (self.choices or {}) else ""
            lines.append(f"  --{key}={_show(value)}{allowed}\n      {(self.help or {}).get(key, '')}")
        return "\n".join(lines)


def _show(value):
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value == "" else str(value)


@dataclass
class _Documents:
    values: dict
    help: dict
    choices: dict


def _read_documents(path, inherited=()):
    """The three documents of ``path``; keys in ``inherited`` (the base's) may omit their help text."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; pass --config_path=<model>/default_config.yaml")
    with open(path, encoding="utf-8") as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not docs or not isinstance(docs[0], dict):
        raise ConfigError(f"config file {path}: the first YAML document must be a mapping of key: default")
    values = docs[0]
    help_ = docs[1] if len(docs) > 1 else {}
    choices = docs[2] if len(docs) > 2 else {}
    undocumented = [k for k in values if k not in help_ and k not in inherited]
    if undocumented:
        raise ConfigError(f"config file {path}: keys without help text in the second document: {undocumented}")
    stray = [k for k in list(help_) + list(choices) if k not in values and k not in inherited]
    if stray:
        raise ConfigError(f"config file {path}: help/choices name keys that have no value: {stray}")
    return _Documents(values, help_, choices)


def _coerce(key, text, default, path):
    """Convert the command-line string ``text`` to the type of ``default``."""
    if isinstance(default, (list, dict)):
        raise ConfigError(f"--{key}: {type(default).__name__} keys of {path} cannot be overridden "
                          f"from the command line; edit the YAML or pass --config_path")
    parsed = yaml.safe_load(text) if text != "" else ""
    if default is None:
        return parsed
    if isinstance(default, bool):
        if isinstance(parsed, bool):
            return parsed
        raise ConfigError(f"--{key}={text}: expected true or false (default {default!r} in {path})")
    if isinstance(default, int):
        if isinstance(parsed, int) and not isinstance(parsed, bool):
            return parsed
        raise ConfigError(f"--{key}={text}: expected an integer (default {default!r} in {path})")
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--{key}={text}: expected a number (default {default!r} in {path})") from None
    return str(text)


def parse_overrides(argv):
    """``['--a=1', '--b', 'x']`` -> ``{'a': '1', 'b': 'x'}`` (values stay strings)."""
    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: options are written --key=value")
        if "=" in arg:
            key, val = arg[2:].split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, val = arg[2:], argv[i + 1]
            i += 1
        else:
            key, val = arg[2:], "true"
        out[key.replace("-", "_")] = val
        i += 1
    return out


def _merged_documents(path, base):
    """The base documents updated by the model's (values, help and choices)."""
    if not base:
        return _read_documents(path)
    shared = _read_documents(base)
    own = _read_documents(path, inherited=shared.values)
    return _Documents(dict(shared.values, **own.values), dict(shared.help, **own.help),
                      dict(shared.choices, **own.choices))


def load_config(default_path, argv=(), base=BASE_CONFIG, **overrides):
    """Load ``base`` + ``default_path`` (or ``--config_path``), apply ``argv`` overrides, then keyword ones.

    Args:
        default_path: the model's ``default_config.yaml``.
        argv: command-line words such as ``["--lr=1e-4", "--device_target=CPU"]``.
        base: the shared keys (``common/base_config.yaml``); None for a stand-alone file.
        **overrides: already-typed values (used by tests and scripts).

    Raises:
        ConfigError: unknown key (lists the valid keys), wrong type, or a value outside its choices.
    """
    cli = parse_overrides(list(argv))
    path = cli.pop("config_path", default_path)
    docs = _merged_documents(path, base)
    cfg = Config(docs.values)
    unknown = [k for k in list(cli) + list(overrides) if k not in cfg]
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} for {path}; valid keys: {', '.join(sorted(cfg))}")
    for key, text in cli.items():
        cfg[key] = _coerce(key, text, docs.values[key], path)
    for key, value in overrides.items():
        cfg[key] = value
    for key, allowed in docs.choices.items():
        if cfg[key] not in allowed:
            raise ConfigError(f"{key}={cfg[key]!r} is not allowed in {path}; choose one of {allowed}")
    object.__setattr__(cfg, "help", docs.help)
    object.__setattr__(cfg, "choices", docs.choices)
    object.__setattr__(cfg, "path", path)
    return cfg


def known_arguments(config_path, argv, base=BASE_CONFIG):
    """The ``--key=value`` words of ``argv`` whose key the config at ``config_path`` has."""
    docs = _merged_documents(config_path, base)
    return [arg for arg in argv if arg.startswith("--") and arg[2:].split("=", 1)[0].replace("-", "_") in docs.values]


CLI_USAGE = """usage: python -m common.config known MODEL/default_config.yaml [--key=value ...]
       python -m common.config check MODEL/default_config.yaml [--key=value ...]

known prints, one per line, the --key=value words whose key MODEL's config has (the scripts pass one command line
to several models this way); check exits with one error line and code 2 when a word is not a valid override."""

if __name__ == "__main__":
    if "--help" in sys.argv[1:2] or "-h" in sys.argv[1:2]:
        print(CLI_USAGE)
        sys.exit(0)
    if len(sys.argv) < 3 or sys.argv[1] not in ("known", "check"):
        raise SystemExit(CLI_USAGE)
    if sys.argv[1] == "check":
        try:
            load_config(sys.argv[2], sys.argv[3:])
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        sys.exit(0)
    for arg in known_arguments(sys.argv[2], sys.argv[3:]):
        print(arg)
