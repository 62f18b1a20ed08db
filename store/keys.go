package store

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Key spaces. Every key stored in a group starts with one of these bytes, so
// that user data, global data and the system records of the global group never
// collide and each can be listed by prefix.
const (
	spaceUser   = 'u'
	spaceGlobal = 'g'
	spaceSystem = 's'
)

// MaxKeySize is the largest user or global key accepted, in bytes.
const MaxKeySize = 1024

// MaxStoredKeySize is the largest stored key a valid user or global key
// makes: the key-space byte and a user's uid, then the key.
const MaxStoredKeySize = 9 + MaxKeySize

// ErrBadKey is returned for a key that is empty or longer than MaxKeySize.
var ErrBadKey = errors.New("store: bad key")

// CheckKey reports whether k is a valid user or global key.
func CheckKey(k []byte) error {
	switch {
	case len(k) == 0:
		return fmt.Errorf("%w: key is empty", ErrBadKey)
	case len(k) > MaxKeySize:
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrBadKey, len(k), MaxKeySize)
	}
	return nil
}

// UserKey returns the stored form of key k of user uid.
func UserKey(uid uint64, k []byte) []byte {
	b := make([]byte, 0, 9+len(k))
	b = append(b, spaceUser)
	b = binary.BigEndian.AppendUint64(b, uid)
	return append(b, k...)
}

// UserPrefix returns the stored prefix of all keys of user uid starting with p.
func UserPrefix(uid uint64, p []byte) []byte { return UserKey(uid, p) }

// GlobalKey returns the stored form of global key k.
func GlobalKey(k []byte) []byte { return append([]byte{spaceGlobal}, k...) }

// SystemKey returns the stored form of the system record named name.
func SystemKey(name string) []byte { return append([]byte{spaceSystem}, name...) }

// UserPart strips the key-space prefix (and uid) from a stored key and returns
// the key as the user wrote it.
func UserPart(stored []byte) []byte {
	if len(stored) == 0 {
		return nil
	}
	switch stored[0] {
	case spaceUser:
		if len(stored) < 9 {
			return nil
		}
		return stored[9:]
	default:
		return stored[1:]
	}
}
