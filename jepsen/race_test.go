//go:build race

package jepsen

func init() { buildFlags = append(buildFlags, "-race") }
