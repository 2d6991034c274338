"""Ed25519 keys for signing bundles: make a key pair, read keys, name a key by its id, sign and check bytes.

All cryptography is the `cryptography` package's Ed25519 (RFC 8032); nothing here is home-made. What a bundle's
signature covers (its manifest's file list, the key id and the time) is `manifest`'s business; this module only
knows keys and bytes. A key is given as a PEM file's path or as the PEM text itself (what a CI secret or a Ray
driver hands over), explicitly or through `BSMFUSION_SIGN_KEY` / `BSMFUSION_VERIFY_KEY`. docs/security.md says how
to create, use and rotate keys.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .errors import OptionError

SIGN_KEY_ENV = "BSMFUSION_SIGN_KEY"
VERIFY_KEY_ENV = "BSMFUSION_VERIFY_KEY"
PRIVATE_FILE = "private.pem"  # what `bsmfusion keygen` writes: PKCS#8 PEM, unencrypted, mode 0600
PUBLIC_FILE = "public.pem"  # SubjectPublicKeyInfo PEM: give this to every machine that scores
KEY_ID_HEX = 16  # a key id: the first 16 hex digits (64 bits) of SHA-256 over the raw 32-byte public key
PEM_START = "-----BEGIN"


def key_id(public_key) -> str:
    """The id of an Ed25519 public key: SHA-256 of its raw bytes, hex, shortened; written next to each signature
    so a refusal can say which key signed."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def public_pem(public_key) -> str:
    """The PEM text of a public key (what `keygen` writes to public.pem; what a Ray driver ships to its actors)."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def generate(out_dir: str | Path) -> tuple[Path, Path, str]:
    """Write a new key pair into `out_dir` (created 0700 when new): `private.pem` (mode 0600 from its creation,
    never readable by others in between) and `public.pem`. Refuses to replace an existing key: a private key that
    is overwritten is gone. Returns (private path, public path, key id)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out_dir)
    for name in (PRIVATE_FILE, PUBLIC_FILE):
        if (out / name).exists():
            raise OptionError(f"'{out}' already holds {name}; keep that key, or choose an empty folder for the new "
                              "pair (rotation: docs/security.md)")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    private_bytes = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
    descriptor = os.open(out / PRIVATE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_bytes)
    os.chmod(out / PRIVATE_FILE, 0o600)  # whatever the umask
    public = private.public_key()
    (out / PUBLIC_FILE).write_text(public_pem(public), encoding="ascii")
    return out / PRIVATE_FILE, out / PUBLIC_FILE, key_id(public)


def from_env(value: Any, option: str, env: str) -> tuple[Any, str]:
    """(key source, how messages name it): `value` when given, named `{option}` (an `OptionError` template: Python
    says the keyword, the CLI its flag); else the environment variable `env` when set (its text: a path or PEM);
    else (None, env)."""
    if value is not None:
        return value, "{" + option + "}"
    text = os.environ.get(env, "").strip()
    return (text or None), env


def _pem(source: Any, name: str, what: str) -> bytes:
    """The PEM bytes of a key given as PEM text or as a file path; `name` (an `{option}` or an environment
    variable) says where it came from."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith(PEM_START):
        return source.encode("ascii", errors="replace")
    if not isinstance(source, (str, os.PathLike)):
        raise OptionError(f"{name} must be a path to a {what} PEM file or its PEM text, not {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise OptionError(f"{name} '{path}': no such file; pass the {what} file 'bsmfusion keygen' wrote "
                          f"({PRIVATE_FILE if what == 'private key' else PUBLIC_FILE})")
    return path.read_bytes()


def _shown(source: Any, name: str) -> str:
    """How a message names a key: the option or variable, and the file when it was one."""
    if isinstance(source, (str, os.PathLike)) and not str(source).lstrip().startswith(PEM_START):
        return f"{name} '{source}'"
    return name


def load_private_key(source: Any, name: str = "{sign_key}"):
    """The Ed25519 private key in `source` (a PEM file's path or PEM text); else an `OptionError` naming `name`."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = _pem(source, name, "private key")
    shown = _shown(source, name)
    if b"PUBLIC KEY" in pem:
        raise OptionError(f"{shown} is a public key; signing needs the private key ({PRIVATE_FILE} from "
                          "'bsmfusion keygen')")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise OptionError(f"{shown} is encrypted; bsmfusion reads unencrypted PEM keys — keep the key in a secret "
                          "store or a 0600 file instead (docs/security.md)") from None
    except (ValueError, UnsupportedAlgorithm) as err:
        raise OptionError(f"{shown} is not a PEM private key ({str(err).splitlines()[0]}); pass the "
                          f"{PRIVATE_FILE} 'bsmfusion keygen' wrote") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise OptionError(f"{shown} is a {type(key).__name__.lstrip('_')}, not an Ed25519 key; make one with "
                          "'bsmfusion keygen'")
    return key


def load_public_key(source: Any, name: str = "{verify_key}"):
    """The Ed25519 public key in `source` (a PEM file's path or PEM text); else an `OptionError` naming `name`. A
    private key is refused: machines that only score should never hold one."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pem = _pem(source, name, "public key")
    shown = _shown(source, name)
    if b"PRIVATE KEY" in pem:
        raise OptionError(f"{shown} is a private key; pass its public half ({PUBLIC_FILE}): a machine that only "
                          "scores should not hold the signing key")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise OptionError(f"{shown} is not a PEM public key ({str(err).splitlines()[0]}); pass the "
                          f"{PUBLIC_FILE} 'bsmfusion keygen' wrote") from None
    if not isinstance(key, Ed25519PublicKey):
        raise OptionError(f"{shown} is a {type(key).__name__.lstrip('_')}, not an Ed25519 key; bundles are signed "
                          "with Ed25519 ('bsmfusion keygen')")
    return key


def is_public_key(value: Any) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return isinstance(value, Ed25519PublicKey)


def is_private_key(value: Any) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return isinstance(value, Ed25519PrivateKey)


def sign(private_key, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of `message`."""
    return private_key.sign(message)


def verifies(public_key, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is `public_key`'s signature of `message`."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
