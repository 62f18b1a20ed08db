package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// OpType says what an Op does.
type OpType uint8

// The operations a command may carry.
const (
	OpGet    OpType = 1 // read a key inside the transaction
	OpPut    OpType = 2 // write a key; its version becomes the entry's index
	OpDelete OpType = 3 // remove a key
)

// Op is one operation of a command branch.
type Op struct {
	Type  OpType
	Key   []byte
	Value []byte // OpPut only
}

// Target says what a Compare looks at.
type Target uint8

// Compare targets.
const (
	TargetVersion Target = 1 // the key's version; 0 when the key does not exist
	TargetValue   Target = 2 // the key's value; a missing key never matches
)

// CmpOp is the relation a Compare checks.
type CmpOp uint8

// Compare relations.
const (
	CmpEqual    CmpOp = 1
	CmpNotEqual CmpOp = 2
	CmpLess     CmpOp = 3
	CmpGreater  CmpOp = 4
)

// Compare is one condition of a command.
type Compare struct {
	Key     []byte
	Target  Target
	Op      CmpOp
	Version uint64 // TargetVersion
	Value   []byte // TargetValue
}

// Command is the unit of change: if every Compare holds, Then runs,
// otherwise Else runs. All of it is applied atomically at one Raft index.
type Command struct {
	Compares []Compare
	Then     []Op
	Else     []Op
}

// OpResult is the outcome of one Op.
type OpResult struct {
	// Found reports whether the key existed before the op ran (get, delete)
	// or is always true for a put.
	Found bool
	// Version is the key's version: for a get, its current one; for a put,
	// the new one; for a delete, the one it had.
	Version uint64
	// Value is the key's value, for a get.
	Value []byte
}

// Result is the outcome of a Command.
type Result struct {
	// Index is the Raft index the command was applied at; every key it wrote
	// now has this version.
	Index uint64
	// Succeeded reports whether all compares held (and so Then ran).
	Succeeded bool
	// Ops holds one result for each op of the branch that ran.
	Ops []OpResult
}

// Limits of the command encoding; a decoder rejects anything larger.
const (
	maxOps        = 128
	maxValueSize  = 64 << 20
	encodingV1    = 1
	maxCommandLen = maxValueSize * 2
)

// ErrBadCommand is returned when a command cannot be decoded or is invalid.
var ErrBadCommand = errors.New("store: bad command")

// Validate checks the shape of a command: op and compare kinds, key sizes
// and counts. It does not check sizes of values; the API layer does.
func (c *Command) Validate() error {
	if n := len(c.Compares) + len(c.Then) + len(c.Else); n > maxOps {
		return fmt.Errorf("%w: %d compares and ops, the limit is %d", ErrBadCommand, n, maxOps)
	}
	if len(c.Then) == 0 && len(c.Else) == 0 {
		return fmt.Errorf("%w: no operations", ErrBadCommand)
	}
	for _, cmp := range c.Compares {
		if len(cmp.Key) == 0 {
			return fmt.Errorf("%w: compare with an empty key", ErrBadCommand)
		}
		if cmp.Target != TargetVersion && cmp.Target != TargetValue {
			return fmt.Errorf("%w: unknown compare target %d", ErrBadCommand, cmp.Target)
		}
		if cmp.Op < CmpEqual || cmp.Op > CmpGreater {
			return fmt.Errorf("%w: unknown compare op %d", ErrBadCommand, cmp.Op)
		}
	}
	for _, ops := range [][]Op{c.Then, c.Else} {
		for _, op := range ops {
			if len(op.Key) == 0 {
				return fmt.Errorf("%w: op with an empty key", ErrBadCommand)
			}
			if op.Type < OpGet || op.Type > OpDelete {
				return fmt.Errorf("%w: unknown op type %d", ErrBadCommand, op.Type)
			}
		}
	}
	return nil
}

// checkWrite reports whether bbolt can store key with value (the stored
// form: an 8-byte version, then the value). It is what a put checks at
// apply time, before anything is written, so that a committed command bbolt
// would refuse is refused whole, the same way on every replica, instead of
// failing the transaction (which stops the node, on every restart: a poison
// pill). The API's own limits (MaxKeySize, the configured value size) are
// far smaller and are checked before proposing.
func checkWrite(key, value []byte) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: write of an empty key", ErrBadCommand)
	case len(key) > bolt.MaxKeySize:
		return fmt.Errorf("%w: key of %d bytes, the limit is %d", ErrBadCommand, len(key), bolt.MaxKeySize)
	case int64(len(value)) > bolt.MaxValueSize-8:
		return fmt.Errorf("%w: value of %d bytes, the limit is %d", ErrBadCommand, len(value), bolt.MaxValueSize-8)
	}
	return nil
}

// checkWrites applies checkWrite to every put of cmd, in both branches:
// which branch runs is known only while applying, after the compares.
func checkWrites(cmd *Command) error {
	for _, ops := range [][]Op{cmd.Then, cmd.Else} {
		for _, op := range ops {
			if op.Type != OpPut {
				continue
			}
			if err := checkWrite(op.Key, op.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

// Encode returns the binary form of c, as carried in a Raft log entry.
func (c *Command) Encode() []byte {
	n := 1 + 3*binary.MaxVarintLen64
	for _, cmp := range c.Compares {
		n += 2 + 3*binary.MaxVarintLen64 + len(cmp.Key) + len(cmp.Value)
	}
	for _, ops := range [][]Op{c.Then, c.Else} {
		for _, op := range ops {
			n += 1 + 2*binary.MaxVarintLen64 + len(op.Key) + len(op.Value)
		}
	}
	b := make([]byte, 0, n)
	b = append(b, encodingV1)
	b = binary.AppendUvarint(b, uint64(len(c.Compares)))
	for _, cmp := range c.Compares {
		b = appendBytes(b, cmp.Key)
		b = append(b, byte(cmp.Target), byte(cmp.Op))
		b = binary.AppendUvarint(b, cmp.Version)
		b = appendBytes(b, cmp.Value)
	}
	for _, ops := range [][]Op{c.Then, c.Else} {
		b = binary.AppendUvarint(b, uint64(len(ops)))
		for _, op := range ops {
			b = append(b, byte(op.Type))
			b = appendBytes(b, op.Key)
			b = appendBytes(b, op.Value)
		}
	}
	return b
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// DecodeCommand parses the binary form made by Encode. The returned command
// aliases b. It never panics, whatever b holds.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) > maxCommandLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCommand, len(b))
	}
	d := decoder{b: b}
	if v := d.byte(); v != encodingV1 {
		return nil, fmt.Errorf("%w: unknown encoding %d", ErrBadCommand, v)
	}
	c := &Command{}
	if n := d.count(); n > 0 {
		c.Compares = make([]Compare, n)
		for i := range c.Compares {
			cmp := &c.Compares[i]
			cmp.Key = d.bytes()
			cmp.Target = Target(d.byte())
			cmp.Op = CmpOp(d.byte())
			cmp.Version = d.uvarint()
			cmp.Value = d.bytes()
		}
	}
	for _, ops := range []*[]Op{&c.Then, &c.Else} {
		if n := d.count(); n > 0 {
			*ops = make([]Op, n)
			for i := range *ops {
				op := &(*ops)[i]
				op.Type = OpType(d.byte())
				op.Key = d.bytes()
				op.Value = d.bytes()
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadCommand, len(d.b))
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or corrupt %s", ErrBadCommand, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a list length and bounds it by maxOps.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > maxOps {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("length")
		return nil
	}
	p := d.b[:v:v]
	d.b = d.b[v:]
	if len(p) == 0 {
		return nil
	}
	return p
}
