"""Names and identifiers: the only strings that ever become paths on disk.

Every value that becomes part of an artefact path is checked here, where it enters, against
one strict pattern: model and data set names, execution ids, git revisions (a folder key is
built from the first 12 characters) and the folder key itself. None can hold ``/``, ``..``,
NUL or any other control character. :class:`~modelledger.stores.artifacts.ArtifactStore`
checks every relative path again, so a value that slips past these still cannot leave the
artefact root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInput

__all__ = [
    "MAX_NUMBER",
    "ModelRef",
    "check_number",
    "fold_name",
    "model_ref",
    "model_subjects",
    "parse_dataset_uri",
    "parse_model_uri",
    "revision_problem",
    "validate_alias",
    "validate_dataset_name",
    "validate_execution_id",
    "validate_folder_key",
    "validate_name",
    "validate_version_folder",
]

MAX_NUMBER = 2**63 - 1
"""The largest version number or key: the stores keep them in signed 64-bit columns."""

# Model names keep the case they were given (Credit-Risk) but are unique without regard to
# it: the stores compare them case-folded. Data set names stay lower-case.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_EXECUTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Hex object names and ref-like text (v1.2.0, HEAD~3, main^2, 1.0+build): never '/', so a
# branch such as feature/x is not a revision here. '..' is refused separately.
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~^@-]{0,127}")
# run-<execution id>, git-<12 characters of a revision>[-dirty] or a UTC timestamp.
_FOLDER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~^@-]{0,159}")


def validate_name(name: object, *, what: str = "model name") -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidInput`.

    Model names are letters (either case), digits, ``.``, ``_`` and ``-``, 1-128 characters,
    starting with a letter or digit, and never ``..``-style path tricks. The case is kept as
    given, but two names that differ only in case name the same model.

    >>> validate_name("Credit-Risk")
    'Credit-Risk'
    """
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what} must be a non-empty string")
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_dataset_name(name: object) -> str:
    """Return ``name`` if it is a valid data set name (lower-case), else raise :class:`InvalidInput`.

    >>> validate_dataset_name("credit-applications")
    'credit-applications'
    """
    what = "data set name"
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what} must be a non-empty string")
    if not _DATASET_NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid {what} {name!r}: use 1-128 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def fold_name(name: str) -> str:
    """The form two model names are compared in: the same model whatever the case.

    >>> fold_name("Credit-Risk")
    'credit-risk'
    """
    return name.lower()  # names are ASCII, so lower() is the full case fold (and SQL's LOWER)


def check_number(value: object, what: str = "version") -> int:
    """``value`` if it is a whole number from 1 to :data:`MAX_NUMBER`, else :class:`InvalidInput`.

    >>> check_number(3)
    3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{what} must be a positive integer, got {value!r}")
    if value > MAX_NUMBER:
        raise InvalidInput(f"{what} {value} is too large: the largest possible is {MAX_NUMBER}")
    return value


def _number(text: str, uri: str) -> int | None:
    """The number ``text`` spells in ASCII digits (None if it spells none); refuses one too large."""
    if not text.isascii() or not text.isdigit():
        return None
    if len(text.lstrip("0")) > len(str(MAX_NUMBER)) or int(text) > MAX_NUMBER:
        raise InvalidInput(
            f"invalid identifier {uri!r}: version {text} is too large: the largest possible is {MAX_NUMBER}"
        )
    return int(text)


def validate_alias(alias: object) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidInput(
            f"invalid alias {alias!r}: use 1-64 lower-case letters, digits, '_' or '-', "
            "starting with a letter"
        )
    if alias == "latest":
        raise InvalidInput("alias 'latest' is reserved: it always means the newest version")
    return alias


def validate_execution_id(value: object) -> str:
    """Return ``value`` if it is a valid execution id, else raise :class:`InvalidInput`.

    1-128 letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, never ``..``.

    >>> validate_execution_id("pipeline-42")
    'pipeline-42'
    """
    if not isinstance(value, str) or not _EXECUTION_ID.fullmatch(value) or ".." in value:
        raise InvalidInput(
            f"invalid execution id {value!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def revision_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable git revision, or ``None`` if it is.

    A revision is a hex object name or ref-like text: 1-128 letters, digits, ``.``, ``_``,
    ``-``, ``+``, ``~``, ``^`` or ``@``, starting with a letter or digit, never ``..``.
    """
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not _REVISION.fullmatch(value) or ".." in value:
        return (
            f"must be a git revision: 1-128 letters, digits, '.', '_', '-', '+', '~', '^' or '@', "
            f"starting with a letter or digit, without '/' or '..' (got {value[:140]!r})"
        )
    return None


def validate_folder_key(value: object) -> str:
    """Return ``value`` if it can name a version folder (one path segment), else raise.

    >>> validate_folder_key("git-3f2a9c1e5b7d-dirty")
    'git-3f2a9c1e5b7d-dirty'
    """
    if not isinstance(value, str) or not _FOLDER_KEY.fullmatch(value) or ".." in value:
        raise InvalidInput(f"invalid version folder name {value!r}: it must be one safe path segment")
    return value


def validate_version_folder(folder: object, model: str) -> str:
    """Return ``folder`` if it is ``models/<model>/<folder key>``, else raise :class:`InvalidInput`.

    >>> validate_version_folder("models/credit-risk/run-42.2", "credit-risk")
    'models/credit-risk/run-42.2'
    """
    parts = folder.split("/") if isinstance(folder, str) else []
    if len(parts) != 3 or parts[:2] != ["models", model]:
        raise InvalidInput(f"invalid version folder {folder!r}: expected models/{model}/<folder name>")
    validate_folder_key(parts[2])
    return folder  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed ``models:/name/3`` or ``models:/name@alias`` identifier (``models:/name/latest``
    and ``models:/name@latest`` are both the alias ``latest``: the highest version number)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"models:/{self.name}/{self.version}"
        return f"models:/{self.name}@{self.alias}"


def parse_model_uri(uri: str) -> ModelRef:
    """Parse a model identifier: ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or
    ``models:/<name>/latest`` (the same as ``@latest``: the model's highest version number).

    >>> parse_model_uri("models:/credit-risk/latest").alias
    'latest'
    >>> parse_model_uri("models:/credit-risk@production")
    ModelRef(name='credit-risk', version=None, alias='production')
    >>> parse_model_uri("models:/credit-risk/3").version
    3
    """
    if not isinstance(uri, str) or not uri.startswith("models:/"):
        raise InvalidInput(
            f"invalid model identifier {uri!r}: expected models:/<name>/<version>, "
            "models:/<name>/latest or models:/<name>@<alias>"
        )
    rest = uri[len("models:/") :]
    if "@" in rest:
        name, _, alias = rest.partition("@")
        validate_name(name)
        if alias != "latest":
            validate_alias(alias)
        return ModelRef(name=name, alias=alias)
    name, sep, version = rest.partition("/")
    validate_name(name)
    if sep and version == "latest":  # MLflow's spelling of @latest
        return ModelRef(name=name, alias="latest")
    number = _number(version, uri) if sep else None
    if not number:
        raise InvalidInput(
            f"invalid model identifier {uri!r}: the version must be a positive integer "
            "(models:/<name>/<version>), latest (models:/<name>/latest) or an alias "
            "(models:/<name>@<alias>)"
        )
    return ModelRef(name=name, version=number)


def parse_dataset_uri(uri: str) -> tuple[str, int | None]:
    """Parse ``datasets:/name/3`` (or ``datasets:/name@latest``) into (name, version or None).

    >>> parse_dataset_uri("datasets:/credit-applications/7")
    ('credit-applications', 7)
    """
    if not isinstance(uri, str) or not uri.startswith("datasets:/"):
        raise InvalidInput(f"invalid data set identifier {uri!r}: expected datasets:/<name>/<version>")
    rest = uri[len("datasets:/") :]
    if rest.endswith("@latest"):
        return validate_dataset_name(rest[: -len("@latest")]), None
    name, sep, version = rest.partition("/")
    validate_dataset_name(name)
    number = _number(version, uri) if sep else None
    if not number:
        raise InvalidInput(f"invalid data set identifier {uri!r}: expected datasets:/<name>/<version>")
    return name, number


def model_ref(name_or_uri: str, version: int | None = None) -> ModelRef:
    """A model version named by identifier, or by name and number (the newest when no number).

    >>> model_ref("credit-risk", 3)
    ModelRef(name='credit-risk', version=3, alias=None)
    >>> model_ref("models:/credit-risk@production").alias
    'production'
    """
    if isinstance(name_or_uri, str) and name_or_uri.startswith("models:/"):
        return parse_model_uri(name_or_uri)
    validate_name(name_or_uri)
    if version is None:
        return ModelRef(name=name_or_uri, alias="latest")
    return ModelRef(name=name_or_uri, version=check_number(version))


def model_subjects(uri_or_name: str) -> tuple[str, list[str], list[str]]:
    """(model name, exact ledger subjects, subject prefixes) of everything about a model
    (``credit-risk`` or ``models:/credit-risk``), a version (``models:/credit-risk/3``) or an
    alias (``models:/credit-risk@production``).

    >>> model_subjects("models:/credit-risk/3")
    ('credit-risk', ['models:/credit-risk/3'], [])
    """
    name = uri_or_name[len("models:/") :] if uri_or_name.startswith("models:/") else uri_or_name
    if "/" in name or "@" in name:
        ref = parse_model_uri(uri_or_name)
        return ref.name, [str(ref)], []
    validate_name(name)
    return name, [f"models:/{name}"], [f"models:/{name}/", f"models:/{name}@"]
