package store

import (
	"encoding/binary"
	"fmt"

	"github.com/hashicorp/raft"
)

// encodingBatch marks a log entry that carries several commands, proposed
// together by a group's leader (raftgroup coalesces concurrent writes). Each
// command applies as if it had an entry of its own at the entry's index: the
// keys it writes take that index as their version. The proposer never puts
// two commands that touch the same key in one batch, so a key's versions
// stay distinct.
const encodingBatch = 3

// MaxBatchCommands is the most commands one batch entry may carry.
const MaxBatchCommands = 1024

// BatchResult is what a batch entry applies to: for each command, in order,
// its *Result or its error (a *MovedError, or ErrBadCommand).
type BatchResult []interface{}

// EncodeBatch joins commands in their binary form (Command.Encode) into the
// form of one batch entry.
func EncodeBatch(cmds [][]byte) []byte {
	n := 1 + binary.MaxVarintLen64
	for _, c := range cmds {
		n += binary.MaxVarintLen64 + len(c)
	}
	b := make([]byte, 0, n)
	b = append(b, encodingBatch)
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for _, c := range cmds {
		b = appendBytes(b, c)
	}
	return b
}

// decodeBatch splits a batch entry into its commands' binary forms, which
// alias b.
func decodeBatch(b []byte) ([][]byte, error) {
	if len(b) > maxCommandLen {
		return nil, fmt.Errorf("%w: batch of %d bytes", ErrBadCommand, len(b))
	}
	d := decoder{b: b}
	if v := d.byte(); v != encodingBatch {
		return nil, fmt.Errorf("%w: unknown encoding %d", ErrBadCommand, v)
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > MaxBatchCommands) {
		return nil, fmt.Errorf("%w: batch of %d commands", ErrBadCommand, n)
	}
	cmds := make([][]byte, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		cmds = append(cmds, d.bytes())
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after a batch", ErrBadCommand, len(d.b))
	}
	return cmds, nil
}

// Keys calls fn with every key c compares, reads or writes.
func (c *Command) Keys(fn func(key []byte)) {
	for _, cmp := range c.Compares {
		fn(cmp.Key)
	}
	for _, ops := range [][]Op{c.Then, c.Else} {
		for _, op := range ops {
			fn(op.Key)
		}
	}
}

// commandCount is how many commands logs carry: one per entry, or a batch
// entry's count.
func commandCount(logs []*raft.Log) int {
	n := 0
	for _, l := range logs {
		n++
		if len(l.Data) > 1 && l.Data[0] == encodingBatch {
			if c, k := binary.Uvarint(l.Data[1:]); k > 0 && c > 1 && c <= MaxBatchCommands {
				n += int(c) - 1
			}
		}
	}
	return n
}
