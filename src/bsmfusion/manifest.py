"""A bundle's manifest: the closed list of its files with their SHA-256, and the Ed25519 signature over that list.

Closed: every file under the bundle folder — subfolders such as `tokenizer/` and an ensemble's `members/<name>/`
included — is listed in `manifest.json` with its SHA-256; the only files the list leaves out are `manifest.json`
itself and `signature.json`, at the top. `check_files` refuses a listed file that is missing or whose digest
differs, a file that is not listed, a symbolic link (a bundle holds plain files), and `read_manifest` a manifest
that does not parse or is not an object of file name → SHA-256: each a one-line `BundleError` naming the file.

Signed: `signature.json` = {"algorithm": "Ed25519", "key_id", "signed_at", "signature"}, where `signature` (base64)
is the signer's Ed25519 signature of `signed_message`: sorted compact JSON of the manifest's file list, the key
id and the signing time, under a fixed purpose string. The signature lives beside the manifest rather than inside
it so that `manifest.json` keeps the plain name → digest layout older bundles, the chunk cache's bundle digest and
other readers know; the top `signature.json` is exempt from the list it signs, and a member bundle's own
`manifest.json` and `signature.json` are listed in the top manifest like any other file. Keys: `signing`; what
this protects against and what it does not: docs/security.md.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import signing
from .errors import BundleError

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
UNLISTED = (MANIFEST, SIGNATURE)  # at the bundle's top only: the list itself and the signature over it
ALGORITHM = "Ed25519"
PURPOSE = "bsmfusion bundle manifest v1"  # inside every signed message: a signature means nothing elsewhere
DIGEST = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger("bsmfusion.bundle")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the file list
def _entries(folder: Path) -> tuple[list[str], list[str]]:
    """(plain files, anything else: symbolic links, sockets, ...) under `folder`, as sorted '/'-paths relative to
    it; links to folders are not followed."""
    files, odd = [], []
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        relative = base.relative_to(folder)
        for name in [d for d in dirs if (base / d).is_symlink()]:
            odd.append((relative / name).as_posix())
            dirs.remove(name)
        for name in names:
            path = base / name
            (odd if path.is_symlink() or not path.is_file() else files).append((relative / name).as_posix())
    return sorted(files), sorted(odd)


def listed_files(folder: Path) -> list[str]:
    """The names a manifest of `folder` lists: every plain file but the top manifest and signature."""
    return [name for name in _entries(folder)[0] if name not in UNLISTED]


def _write_atomically(path: Path, text: str) -> None:
    descriptor, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(folder: str | Path, sign_key=None) -> dict[str, str]:
    """List every file of `folder` with its SHA-256 in its manifest.json (replaced atomically) and, with
    `sign_key` (an Ed25519 private key), sign it. A signed folder is not rewritten unsigned: its signature would
    stop matching, so that is a `BundleError` asking for the key. Returns the file list."""
    folder = Path(folder)
    if sign_key is None and (folder / SIGNATURE).exists():
        raise BundleError(f"bundle '{folder}' is signed ({SIGNATURE}); changing its files needs the sign key to "
                          f"re-sign it: pass --sign-key (or set {signing.SIGN_KEY_ENV})")
    files = {name: sha256_file(folder / name) for name in listed_files(folder)}
    _write_atomically(folder / MANIFEST, json.dumps(files, indent=2, sort_keys=True))
    if sign_key is not None:
        sign_manifest(folder, sign_key, files)
    return files


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"'{key}' is listed twice")
        seen[key] = value
    return seen


def _plain_name(name: str) -> bool:
    """A relative '/'-path inside the bundle: no '..', '.', empty part, backslash or leading '/'."""
    parts = PurePosixPath(name).parts
    return (bool(name) and "\\" not in name and not name.startswith("/") and "/".join(parts) == name
            and all(part not in (".", "..") for part in parts) and name not in UNLISTED)


def read_manifest(folder: str | Path) -> dict[str, str]:
    """The manifest's file list (name → SHA-256); a `BundleError` when there is none, it does not parse, it is not
    an object, or an entry is not a file name inside the bundle with a SHA-256 digest."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"'{folder}' is not a bsmfusion bundle (no {MANIFEST}); pass the folder written by "
                          "'bsmfusion train --out'")
    try:
        files = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as err:
        raise BundleError(f"bundle '{folder}': {MANIFEST} does not parse ({str(err).splitlines()[0]}); it was damaged "
                          "or altered: copy the bundle again from its source") from None
    if not isinstance(files, dict):
        raise BundleError(f"bundle '{folder}': {MANIFEST} holds a JSON {type(files).__name__}, not an object of file "
                          "name → SHA-256; it was damaged or altered: copy the bundle again from its source")
    for name, digest in files.items():
        if not _plain_name(name):
            raise BundleError(f"bundle '{folder}': {MANIFEST} lists '{name}', which is not a file name inside the "
                              "bundle; it was altered: copy the bundle again from its source")
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise BundleError(f"bundle '{folder}': {MANIFEST} gives '{name}' the digest {digest!r}, not a SHA-256; it "
                              "was damaged or altered: copy the bundle again from its source")
    return files


def check_files(folder: str | Path, files: dict[str, str]) -> None:
    """The folder holds exactly the listed files, each with its SHA-256; else a `BundleError` naming the first
    file that is missing, a link, unlisted or different (in that order: digests, the slow part, come last)."""
    folder = Path(folder)
    present, odd = _entries(folder)
    if odd:
        raise BundleError(f"bundle '{folder}': '{odd[0]}' is a symbolic link or not a plain file; a bundle holds plain "
                          "files only: copy it with its files (cp -rL) or again from its source")
    present_set = set(present)
    for name in sorted(files):
        if name not in present_set:
            raise BundleError(f"bundle '{folder}': file '{name}' is missing; re-train or copy the whole bundle folder")
    unlisted = [name for name in present if name not in files and name not in UNLISTED]
    if unlisted:
        raise BundleError(f"bundle '{folder}': file '{unlisted[0]}' is not listed in {MANIFEST} (added after the bundle "
                          "was written); refusing to load it: remove that file, or copy the bundle again from its "
                          "source")
    for name in sorted(files):
        if sha256_file(folder / name) != files[name]:
            raise BundleError(f"bundle '{folder}': file '{name}' does not match its SHA-256 in {MANIFEST} (modified or "
                              "corrupt); refusing to load it")


def check_manifest(folder: str | Path) -> dict[str, str]:
    """`read_manifest` then `check_files`: the verified file list."""
    files = read_manifest(folder)
    check_files(folder, files)
    return files


# --------------------------------------------------------------------------- the signature
def signed_message(files: dict[str, str], key_id: str, signed_at: str) -> bytes:
    """The bytes a signature covers: sorted compact ASCII JSON of the purpose, the file list, key id and time."""
    body = {"purpose": PURPOSE, "files": files, "key_id": key_id, "signed_at": signed_at}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_manifest(folder: str | Path, sign_key, files: dict[str, str] | None = None) -> dict[str, str]:
    """Write signature.json (atomically): `sign_key`'s signature of `files` (default: the manifest's list), its
    key id and the time. Returns the signature record."""
    folder = Path(folder)
    files = read_manifest(folder) if files is None else files
    key_id = signing.key_id(sign_key.public_key())
    signed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    signature = signing.sign(sign_key, signed_message(files, key_id, signed_at))
    record = {"algorithm": ALGORITHM, "key_id": key_id, "signed_at": signed_at,
              "signature": base64.b64encode(signature).decode("ascii")}
    _write_atomically(folder / SIGNATURE, json.dumps(record, indent=2))
    return record


def read_signature(folder: str | Path) -> dict[str, str] | None:
    """The signature record, None when the bundle is unsigned; a `BundleError` when signature.json is damaged."""
    folder = Path(folder)
    path = folder / SIGNATURE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        fields = {name: record[name] for name in ("algorithm", "key_id", "signed_at", "signature")}
        if not all(isinstance(value, str) for value in fields.values()):
            raise ValueError("a field is not a string")
        fields["raw"] = base64.b64decode(fields["signature"], validate=True)
    except (ValueError, UnicodeDecodeError, TypeError, KeyError, binascii.Error) as err:
        raise BundleError(f"bundle '{folder}': {SIGNATURE} is damaged ({type(err).__name__}: {err}); copy the bundle "
                          "again from its source, or re-sign it") from None
    if fields["algorithm"] != ALGORITHM:
        raise BundleError(f"bundle '{folder}': {SIGNATURE} names algorithm '{fields['algorithm']}'; bsmfusion signs and "
                          f"checks {ALGORITHM} only: re-sign the bundle")
    return fields


def check_signature(folder: str | Path, files: dict[str, str], verify_key) -> dict[str, str]:
    """The bundle's signature is `verify_key`'s over `files`; else a `BundleError` saying whether it is unsigned,
    signed by another key, or changed after signing. Returns the signature record."""
    folder = Path(folder)
    record = read_signature(folder)
    ours = signing.key_id(verify_key)
    if record is None:
        raise BundleError(f"bundle '{folder}' is not signed, and a verify key ({ours}) requires a signature; sign it "
                          f"where it was built: 'bsmfusion sign --model {folder} --sign-key private.pem'")
    if record["key_id"] != ours:
        raise BundleError(f"bundle '{folder}' is signed by key {record['key_id']}, not by the verify key ({ours}); pass "
                          f"the public key of {record['key_id']}, or have the bundle re-signed with yours")
    if not signing.verifies(verify_key, record["raw"], signed_message(files, record["key_id"], record["signed_at"])):
        raise BundleError(f"bundle '{folder}': the signature (key {ours}, {record['signed_at']}) does not match its "
                          f"{MANIFEST}: the bundle was changed after it was signed; refusing to load it, copy it again "
                          "from its source")
    return record


def check_before_signing(folder: str | Path, files: dict[str, str], sign_key, verify_key=None) -> None:
    """Signing must not launder a change: a bundle signed already is re-signed (by `export`, `sign`) only when its
    signature holds — under `verify_key` when given (moving a bundle to a new key), else under the sign key
    itself. An unsigned bundle may be signed, unless a `verify_key` asked for a signature."""
    record = read_signature(folder)
    if verify_key is not None:
        check_signature(folder, files, verify_key)
        return
    if record is None:
        return
    new = signing.key_id(sign_key.public_key())
    if record["key_id"] != new:
        raise BundleError(f"bundle '{folder}' is signed by key {record['key_id']}, not by the sign key ({new}); to move "
                          f"it to the new key, pass the old public key to check first: 'bsmfusion sign --model {folder} "
                          "--sign-key NEW --verify-key OLD.pub' (docs/security.md, rotation)")
    check_signature(folder, files, sign_key.public_key())


def sign_bundle(folder: str | Path, sign_key, verify_key=None) -> dict[str, str]:
    """Sign a bundle in place (`bsmfusion sign`): its closed manifest is checked, then its current signature
    (`check_before_signing`), then signature.json is (re)written. The file list does not change, so an ensemble's
    members keep their own signatures: the top one covers all their files. Returns the new signature record."""
    files = check_manifest(folder)
    check_before_signing(folder, files, sign_key, verify_key)
    return sign_manifest(folder, sign_key, files)


@dataclass(frozen=True)
class Checked:
    """What `check_bundle` found: the verified file list, the signature record (None: unsigned) and whether the
    signature was checked against a verify key."""

    files: dict[str, str]
    signature: dict[str, str] | None
    signature_checked: bool

    def describe(self) -> str:
        if self.signature is None:
            signed = "unsigned"
        else:
            signed = f"signed by key {self.signature['key_id']} at {self.signature['signed_at']}"
            signed += ", signature verified" if self.signature_checked else " (signature not checked: no verify key)"
        return f"{len(self.files)} files match {MANIFEST}; {signed}"


def check_bundle(folder: str | Path, verify_key=None) -> Checked:
    """The closed manifest, and the signature under `verify_key` (an Ed25519 public key) when one is given."""
    files = check_manifest(folder)
    if verify_key is not None:
        return Checked(files, check_signature(folder, files, verify_key), True)
    return Checked(files, read_signature(folder), False)


_NOTED: set[str] = set()
_NOTED_LOCK = threading.Lock()


def note_unchecked(folder: str | Path) -> None:
    """Say once per process and bundle folder (a warning on the `bsmfusion.bundle` logger) that its signature was
    not checked: scoring without a verify key loads as before but should not do so silently."""
    key = str(Path(folder).resolve())
    with _NOTED_LOCK:
        if key in _NOTED:
            return
        _NOTED.add(key)
    try:
        record = read_signature(folder)
        what = f"signed by key {record['key_id']}" if record else "unsigned"
    except BundleError:
        what = f"{SIGNATURE} damaged"
    log.warning("bundle '%s' (%s): its signature was not checked; pass --verify-key (Python: verify_key=) or set "
                "%s to refuse unsigned or altered bundles", folder, what, signing.VERIFY_KEY_ENV)
