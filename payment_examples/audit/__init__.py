"""The audit trail (notebook 06): a hash chain per entity over the AuditLog table (``chain``: append, verify,
checkpoints, signers) and the stream projection that fills it (``projection``: Projector, PaymentProjector, the
Subjects of each table, and the Transactions projected from the payments' stream).

A layer *below* the domain, not a sibling pattern: it records what the tables' streams say and calls no service,
so ``PaymentService`` (``payments``) may read the chain (``audit_trail``, the ``audit=`` injection) without an
arrow running up. It imports the core and the tables only.
"""

from __future__ import annotations

from payment_examples.audit.chain import (
    GENESIS,
    UNATTRIBUTED,
    AuditAppendError,
    AuditRecord,
    AuditTracker,
    ChainProblem,
    ChainVerification,
    Checkpoint,
    HmacSigner,
    KmsMacSigner,
    Signer,
    canonical_json,
    chain_hash,
    field_diff,
    find_chain_problems,
    signer_for,
)
from payment_examples.audit.projection import (
    AUDITED_FIELDS,
    PAYMENTS,
    Change,
    PaymentProjector,
    Projected,
    Projector,
    Projectors,
    Subject,
    audit_entity,
    event_key,
    recorded_version,
)

__all__ = [
    "AUDITED_FIELDS",
    "AuditAppendError",
    "AuditRecord",
    "AuditTracker",
    "ChainProblem",
    "ChainVerification",
    "Change",
    "Checkpoint",
    "GENESIS",
    "HmacSigner",
    "KmsMacSigner",
    "PAYMENTS",
    "PaymentProjector",
    "Projected",
    "Projector",
    "Projectors",
    "Signer",
    "Subject",
    "UNATTRIBUTED",
    "audit_entity",
    "canonical_json",
    "chain_hash",
    "event_key",
    "field_diff",
    "find_chain_problems",
    "recorded_version",
    "signer_for",
]
