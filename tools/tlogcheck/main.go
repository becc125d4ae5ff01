// Command tlogcheck checks copyledger's published proofs, checkpoints and signed notes with
// Go's golang.org/x/mod/sumdb/tlog and sumdb/note, an implementation no one on the project
// wrote. The test suite runs it against what the registry serves.
//
// Usage:
//
//	tlogcheck note VKEY FILE
//	tlogcheck checkpoint VKEY FILE
//	tlogcheck inclusion SIZE ROOTHEX INDEX LEAFHASHHEX PROOFHEX,PROOFHEX,...
//	tlogcheck consistency OLDSIZE OLDROOTHEX NEWSIZE NEWROOTHEX PROOFHEX,...
//	tlogcheck leafhash DATAHEX
//
// Exit status 0 means verified; 1, with a message on standard error, means it did not
// (a bad signature, a wrong root, a malformed input alike); 2 means the command line is wrong.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const usage = `usage:
  tlogcheck note VKEY FILE
  tlogcheck checkpoint VKEY FILE
  tlogcheck inclusion SIZE ROOTHEX INDEX LEAFHASHHEX PROOFHEX,PROOFHEX,...
  tlogcheck consistency OLDSIZE OLDROOTHEX NEWSIZE NEWROOTHEX PROOFHEX,...
  tlogcheck leafhash DATAHEX
`

// commands maps a command name to its number of arguments and its implementation,
// which returns what to print on success.
var commands = map[string]struct {
	args int
	run  func(args []string) (string, error)
}{
	"note":        {2, cmdNote},
	"checkpoint":  {2, cmdCheckpoint},
	"inclusion":   {5, cmdInclusion},
	"consistency": {5, cmdConsistency},
	"leafhash":    {1, cmdLeafHash},
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	args := os.Args[2:]
	if !ok || len(args) != cmd.args {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	out, err := cmd.run(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlogcheck %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	fmt.Print(out)
}

// cmdNote opens the note in FILE with the one verifier key VKEY and returns its text.
func cmdNote(args []string) (string, error) {
	n, err := openNote(args[0], args[1])
	if err != nil {
		return "", err
	}
	return n.Text, nil
}

// cmdCheckpoint opens a C2SP tlog-checkpoint signed by VKEY (other signatures, such as a
// second key during a rotation's overlap, are allowed) and returns "origin size roothex".
func cmdCheckpoint(args []string) (string, error) {
	n, err := openNote(args[0], args[1])
	if err != nil {
		return "", err
	}
	origin, size, root, err := parseCheckpoint(n.Text)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %d %s\n", origin, size, hex.EncodeToString(root[:])), nil
}

// cmdInclusion checks an RFC 6962 inclusion proof of leaf INDEX in the tree SIZE, ROOT.
func cmdInclusion(args []string) (string, error) {
	size, err := parseSize(args[0])
	if err != nil {
		return "", err
	}
	root, err := parseHash(args[1])
	if err != nil {
		return "", err
	}
	index, err := parseSize(args[2])
	if err != nil {
		return "", err
	}
	leaf, err := parseHash(args[3])
	if err != nil {
		return "", err
	}
	proof, err := parseProof(args[4])
	if err != nil {
		return "", err
	}
	if index >= size {
		return "", fmt.Errorf("index %d is not below tree size %d", index, size)
	}
	if err := tlog.CheckRecord(tlog.RecordProof(proof), size, root, index, leaf); err != nil {
		return "", err
	}
	return "inclusion OK\n", nil
}

// cmdConsistency checks an RFC 6962 consistency proof that the tree OLDSIZE, OLDROOT is a
// prefix of the tree NEWSIZE, NEWROOT.
func cmdConsistency(args []string) (string, error) {
	oldSize, err := parseSize(args[0])
	if err != nil {
		return "", err
	}
	oldRoot, err := parseHash(args[1])
	if err != nil {
		return "", err
	}
	newSize, err := parseSize(args[2])
	if err != nil {
		return "", err
	}
	newRoot, err := parseHash(args[3])
	if err != nil {
		return "", err
	}
	proof, err := parseProof(args[4])
	if err != nil {
		return "", err
	}
	if oldSize < 1 || oldSize > newSize {
		return "", fmt.Errorf("old size %d is not in 1..%d", oldSize, newSize)
	}
	if err := tlog.CheckTree(tlog.TreeProof(proof), newSize, newRoot, oldSize, oldRoot); err != nil {
		return "", err
	}
	return "consistency OK\n", nil
}

// cmdLeafHash returns the RFC 6962 leaf hash SHA-256(0x00 || data) of DATAHEX, in base64.
func cmdLeafHash(args []string) (string, error) {
	data, err := hex.DecodeString(args[0])
	if err != nil {
		return "", fmt.Errorf("data: %v", err)
	}
	return tlog.RecordHash(data).String() + "\n", nil
}

// openNote reads FILE and opens it as a signed note that VKEY must have signed.
func openNote(vkey, file string) (*note.Note, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("verifier key: %v", err)
	}
	msg, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return nil, err
	}
	return n, nil
}

// parseCheckpoint reads the body of a C2SP tlog-checkpoint: the origin line, the tree size
// in decimal, the root hash in base64, then optional extension lines.
func parseCheckpoint(text string) (origin string, size int64, root tlog.Hash, err error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return "", 0, root, errors.New("checkpoint: fewer than three lines")
	}
	origin = lines[0]
	if origin == "" {
		return "", 0, root, errors.New("checkpoint: empty origin")
	}
	if size, err = parseSize(lines[1]); err != nil {
		return "", 0, root, fmt.Errorf("checkpoint: %v", err)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return "", 0, root, errors.New("checkpoint: root is not a base64 SHA-256 hash")
	}
	copy(root[:], raw)
	return origin, size, root, nil
}

// parseSize reads a tree size or leaf index: decimal digits, no sign, no leading zeros.
func parseSize(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != s {
		return 0, fmt.Errorf("%q is not a tree size or index", s)
	}
	return n, nil
}

// parseHash reads a SHA-256 hash written in hexadecimal.
func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := hex.DecodeString(s)
	if err != nil || len(raw) != tlog.HashSize {
		return h, fmt.Errorf("%q is not a hex SHA-256 hash", s)
	}
	copy(h[:], raw)
	return h, nil
}

// parseProof reads comma-separated hex hashes; the empty string is the empty proof.
func parseProof(s string) ([]tlog.Hash, error) {
	if s == "" {
		return nil, nil
	}
	var proof []tlog.Hash
	for _, part := range strings.Split(s, ",") {
		h, err := parseHash(part)
		if err != nil {
			return nil, fmt.Errorf("proof: %v", err)
		}
		proof = append(proof, h)
	}
	return proof, nil
}
