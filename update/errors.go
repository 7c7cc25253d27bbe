package update

import (
	"context"
	"errors"
)

// Sentinel errors. Returned errors wrap one or more of them; match with
// errors.Is. A signature failure also matches ErrThreshold, because the
// threshold is what was not met.
var (
	ErrMalformed       = errors.New("update: malformed metadata")
	ErrSignature       = errors.New("update: bad signature")
	ErrUnknownKey      = errors.New("update: signature by an untrusted key")
	ErrRevokedKey      = errors.New("update: signature by a revoked key")
	ErrThreshold       = errors.New("update: signature threshold not met")
	ErrWeakAlgorithm   = errors.New("update: unsupported or weak algorithm")
	ErrRollback        = errors.New("update: rollback to an older version")
	ErrWrongBoard      = errors.New("update: bundle is for another board")
	ErrWrongArch       = errors.New("update: bundle is for another architecture")
	ErrTooLarge        = errors.New("update: size limit exceeded")
	ErrTruncated       = errors.New("update: truncated")
	ErrExpired         = errors.New("update: metadata expired")
	ErrHashMismatch    = errors.New("update: payload hash mismatch")
	ErrTimeout         = errors.New("update: transfer timed out")
	ErrOrder           = errors.New("update: step out of order")
	ErrDownload        = errors.New("update: download failed")
	ErrNoBundle        = errors.New("update: no valid bundle found")
	ErrPendingCommit   = errors.New("update: a trial slot is running and not committed")
	ErrNothingToCommit = errors.New("update: no trial slot to commit")
	ErrHealthCheck     = errors.New("update: health check failed")
	ErrNoBootState     = errors.New("update: no valid boot state")
	ErrUnbootable      = errors.New("update: no bootable slot")
	ErrPowerLoss       = errors.New("update: simulated power loss")
	ErrBusy            = errors.New("update: another update operation is running on this device")
)

// reasons maps sentinels to the reason tokens used in events (and syslog),
// most specific first.
var reasons = []struct {
	err    error
	reason string
}{
	{ErrSignature, "bad_signature"},
	{ErrRevokedKey, "revoked_key"},
	{ErrUnknownKey, "untrusted_key"},
	{ErrWeakAlgorithm, "weak_algorithm"},
	{ErrThreshold, "threshold"},
	{ErrExpired, "expired"},
	{ErrRollback, "rollback"},
	{ErrWrongBoard, "incompatible_board"},
	{ErrWrongArch, "incompatible_arch"},
	{ErrHashMismatch, "hash_mismatch"},
	{ErrTooLarge, "oversize"},
	{ErrTruncated, "truncated"},
	{ErrTimeout, "timeout"},
	{ErrMalformed, "malformed"},
	{ErrDownload, "download_failed"},
	{ErrNoBundle, "no_bundle"},
	{ErrPendingCommit, "pending_commit"},
	{ErrHealthCheck, "healthcheck"},
	{ErrPowerLoss, "power_loss"},
	{ErrBusy, "busy"},
	{ErrOrder, "internal"},
	{context.Canceled, "canceled"},
	{context.DeadlineExceeded, "timeout"},
}

// Reason returns the short, stable reason token for err as carried in
// update events ("hash_mismatch", "threshold", "rollback", ...), or "error"
// when err matches no sentinel. It returns "" for a nil error.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "error"
}
