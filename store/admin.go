package store

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Admin commands change a group's state machine itself rather than user
// data: they carry out splits. They use their own encoding tag so a user
// command can never be mistaken for one.
const encodingAdmin = 2

// AdminKind says what an admin command does.
type AdminKind uint8

// Admin command kinds.
const (
	// AdminFence freezes shards: from its index on, the group refuses every
	// command that touches a user key in them. Fences are never lifted:
	// the shards now live in another group.
	AdminFence AdminKind = 1
	// AdminIngest writes keys with the versions they had in the group they
	// come from, and sets the group's version base (once) so that its own
	// versions stay above every ingested one.
	AdminIngest AdminKind = 2
	// AdminPurge deletes every user key of the fenced shards.
	AdminPurge AdminKind = 3
)

// Admin is an admin command.
type Admin struct {
	Kind   AdminKind
	Shards []int  // AdminFence, AdminPurge
	Base   uint64 // AdminIngest: the version base to set if none is set
	KVs    []KV   // AdminIngest: stored keys with values and versions
}

// ErrMoved is returned (inside a *MovedError) for a command that touches a
// shard this group has handed to another.
var ErrMoved = errors.New("store: shard moved to another group")

// MovedError names the moved shard.
type MovedError struct{ Shard int }

func (e *MovedError) Error() string {
	return fmt.Sprintf("store: shard %02d moved to another group", e.Shard)
}

// Is makes errors.Is(err, ErrMoved) true.
func (e *MovedError) Is(target error) bool { return target == ErrMoved }

// Encode returns the binary form of a.
func (a *Admin) Encode() []byte {
	b := []byte{encodingAdmin, byte(a.Kind)}
	b = binary.AppendUvarint(b, a.Base)
	b = binary.AppendUvarint(b, uint64(len(a.Shards)))
	for _, s := range a.Shards {
		b = append(b, byte(s))
	}
	b = binary.AppendUvarint(b, uint64(len(a.KVs)))
	for _, kv := range a.KVs {
		b = appendBytes(b, kv.Key)
		b = appendBytes(b, kv.Value)
		b = binary.AppendUvarint(b, kv.Version)
	}
	return b
}

const maxIngest = 1 << 20

// DecodeAdmin parses the form made by Admin.Encode. It never panics.
func DecodeAdmin(b []byte) (*Admin, error) {
	d := decoder{b: b}
	if v := d.byte(); v != encodingAdmin {
		return nil, fmt.Errorf("%w: not an admin command", ErrBadCommand)
	}
	a := &Admin{Kind: AdminKind(d.byte())}
	a.Base = d.uvarint()
	n := d.uvarint()
	if n > 100 {
		return nil, fmt.Errorf("%w: %d shards", ErrBadCommand, n)
	}
	for i := uint64(0); i < n; i++ {
		s := int(d.byte())
		if s >= 100 {
			return nil, fmt.Errorf("%w: shard %d", ErrBadCommand, s)
		}
		a.Shards = append(a.Shards, s)
	}
	n = d.uvarint()
	if n > maxIngest {
		return nil, fmt.Errorf("%w: %d keys", ErrBadCommand, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		kv := KV{Key: d.bytes(), Value: d.bytes(), Version: d.uvarint()}
		if len(kv.Key) == 0 && d.err == nil {
			return nil, fmt.Errorf("%w: empty key", ErrBadCommand)
		}
		a.KVs = append(a.KVs, kv)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadCommand, len(d.b))
	}
	if a.Kind < AdminFence || a.Kind > AdminPurge {
		return nil, fmt.Errorf("%w: unknown admin kind %d", ErrBadCommand, a.Kind)
	}
	return a, nil
}

// ShardOf returns the shard of a stored user key, or -1 for any other key.
func ShardOf(stored []byte) int {
	if len(stored) < 9 || stored[0] != spaceUser {
		return -1
	}
	return int(binary.BigEndian.Uint64(stored[1:9]) % 100)
}

// MaxVersionBase is the largest version base an ingest may set: versions
// are base + index, and a base near 2^64 would wrap them back to small
// numbers (a present key with version 0 looks absent to a CAS). An
// ingested version must stay below 2^63 for the same reason.
const (
	MaxVersionBase = 1 << 62
	maxVersion     = 1<<63 - 1
)

// Validate checks what DecodeAdmin cannot see in the encoding: the kind,
// shards 0-99 (Encode writes a shard as one byte, so shard 305 would
// become 49), at least one shard to fence or purge, a version base and
// versions that cannot wrap, and keys and values bbolt can store. The
// state machine refuses an admin command that fails it (deterministically,
// on every replica), and entry points check it before proposing.
func (a *Admin) Validate() error {
	switch a.Kind {
	case AdminFence, AdminPurge:
		if len(a.Shards) == 0 || len(a.Shards) > 100 {
			return fmt.Errorf("%w: %d shards, want 1-100", ErrBadCommand, len(a.Shards))
		}
		for _, sh := range a.Shards {
			if sh < 0 || sh > 99 {
				return fmt.Errorf("%w: shard %d, want 0-99", ErrBadCommand, sh)
			}
		}
	case AdminIngest:
		if a.Base > MaxVersionBase {
			return fmt.Errorf("%w: version base %d, the limit is %d", ErrBadCommand, a.Base, uint64(MaxVersionBase))
		}
		if len(a.KVs) > maxIngest {
			return fmt.Errorf("%w: %d keys, the limit is %d", ErrBadCommand, len(a.KVs), maxIngest)
		}
		for _, kv := range a.KVs {
			if err := checkWrite(kv.Key, kv.Value); err != nil {
				return err
			}
			if kv.Version == 0 || kv.Version > maxVersion {
				return fmt.Errorf("%w: ingested version %d, want 1-%d", ErrBadCommand, kv.Version, uint64(maxVersion))
			}
		}
	default:
		return fmt.Errorf("%w: unknown admin kind %d", ErrBadCommand, a.Kind)
	}
	return nil
}
