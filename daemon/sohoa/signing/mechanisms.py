"""The PKCS#11 mechanism for each CMS signature algorithm that sohoa signs with.

pyHanko names the algorithm (``rsassa_pkcs1v15``, ``rsassa_pss``, ``ecdsa``)
and the digest. This module turns that pair into the PyKCS11 mechanism and the
transformations the token needs around it. Supported: RSA PKCS#1 v1.5 and
RSA-PSS with SHA-256/384/512 hashed on the token, and ECDSA on curve P-256
(or larger) where the host hashes and the token signs the digest with
``CKM_ECDSA``, because many smart cards offer no hashing ECDSA mechanism.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import PyKCS11
from asn1crypto import algos

from sohoa.errors import SigningError
from sohoa.i18n import N_

SUPPORTED_DIGESTS = ("sha256", "sha384", "sha512")
_RSA_PKCS1V15 = {
    "sha256": PyKCS11.CKM_SHA256_RSA_PKCS,
    "sha384": PyKCS11.CKM_SHA384_RSA_PKCS,
    "sha512": PyKCS11.CKM_SHA512_RSA_PKCS,
}
_RSA_PSS = {
    "sha256": PyKCS11.CKM_SHA256_RSA_PKCS_PSS,
    "sha384": PyKCS11.CKM_SHA384_RSA_PKCS_PSS,
    "sha512": PyKCS11.CKM_SHA512_RSA_PKCS_PSS,
}
_PSS_HASH = {"sha256": PyKCS11.CKM_SHA256, "sha384": PyKCS11.CKM_SHA384, "sha512": PyKCS11.CKM_SHA512}
_PSS_MGF1 = {"sha256": PyKCS11.CKG_MGF1_SHA256, "sha384": PyKCS11.CKG_MGF1_SHA384, "sha512": PyKCS11.CKG_MGF1_SHA512}


def _unchanged(data: bytes) -> bytes:
    return data


@dataclass(frozen=True)
class RawSignatureOperation:
    """One C_Sign call: the mechanism, and how to prepare the input and encode the output."""

    mechanism: object  # a PyKCS11 mechanism object
    prepare_input: Callable[[bytes], bytes] = _unchanged
    encode_output: Callable[[bytes], bytes] = _unchanged


def select_operation(signature_mechanism: algos.SignedDigestAlgorithm, digest_algorithm: str) -> RawSignatureOperation:
    """Return the token operation for pyHanko's ``signature_mechanism`` over ``digest_algorithm``.

    Raises SigningError for an algorithm or digest this module does not support.
    """
    digest_algorithm = digest_algorithm.lower()
    algorithm = _signature_algorithm(signature_mechanism)

    if algorithm == "rsassa_pkcs1v15" and digest_algorithm in _RSA_PKCS1V15:
        return RawSignatureOperation(PyKCS11.Mechanism(_RSA_PKCS1V15[digest_algorithm], None))
    if algorithm == "rsassa_pss" and digest_algorithm in _RSA_PSS:
        return _pss_operation(signature_mechanism, digest_algorithm)
    if algorithm == "ecdsa" and digest_algorithm in SUPPORTED_DIGESTS:
        return RawSignatureOperation(
            PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None),
            prepare_input=lambda data: hashlib.new(digest_algorithm, data).digest(),
            encode_output=_ecdsa_raw_to_der,
        )
    raise SigningError(
        N_("Signature algorithm {algorithm} with digest {digest} is not supported; use an RSA or ECDSA P-256 key with SHA-256."),
        algorithm=algorithm,
        digest=digest_algorithm,
    )


def _signature_algorithm(signature_mechanism: algos.SignedDigestAlgorithm) -> str:
    try:
        return signature_mechanism.signature_algo
    except ValueError:
        return signature_mechanism["algorithm"].native


def _pss_operation(signature_mechanism: algos.SignedDigestAlgorithm, digest_algorithm: str) -> RawSignatureOperation:
    parameters = signature_mechanism["parameters"]
    pss_hash = parameters["hash_algorithm"]["algorithm"].native
    mgf_hash = parameters["mask_gen_algorithm"]["parameters"]["algorithm"].native
    if pss_hash != digest_algorithm or mgf_hash != digest_algorithm:
        raise SigningError(
            N_("RSA-PSS with hash {pss_hash} and MGF1 hash {mgf_hash} does not match the digest {digest}."),
            pss_hash=pss_hash,
            mgf_hash=mgf_hash,
            digest=digest_algorithm,
        )
    mechanism = PyKCS11.RSA_PSS_Mechanism(
        _RSA_PSS[digest_algorithm],
        _PSS_HASH[digest_algorithm],
        _PSS_MGF1[digest_algorithm],
        parameters["salt_length"].native,
    )
    return RawSignatureOperation(mechanism)


def _ecdsa_raw_to_der(signature: bytes) -> bytes:
    # CKM_ECDSA returns r || s, each as long as the curve order. CMS needs the
    # DER SEQUENCE { r INTEGER, s INTEGER } of RFC 3279 instead.
    return algos.DSASignature.from_p1363(signature).dump()
