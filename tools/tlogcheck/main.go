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
//	tlogcheck tiles URL VKEY SIZE,SIZE,...
//
// Exit status 0 means verified; 1, with a message on standard error, means it did not
// (a bad signature, a wrong root, a malformed input alike); 2 means the command line is wrong.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const usage = `usage:
  tlogcheck note VKEY FILE
  tlogcheck checkpoint VKEY FILE
  tlogcheck inclusion SIZE ROOTHEX INDEX LEAFHASHHEX PROOFHEX,PROOFHEX,...
  tlogcheck consistency OLDSIZE OLDROOTHEX NEWSIZE NEWROOTHEX PROOFHEX,...
  tlogcheck leafhash DATAHEX
  tlogcheck tiles URL VKEY SIZE,SIZE,...
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
	"tiles":       {3, cmdTiles},
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

// cmdTiles reads a log published as C2SP tlog-tiles at URL (http://, https://, or a local
// directory) with tlog.TileHashReader: it opens URL/checkpoint under VKEY, then for each SIZE
// computes the tree hash from the tiles, checks a consistency proof from SIZE to the
// checkpoint's size, and reads the entry bundle holding leaf SIZE-1, checking that every entry
// in it hashes to the level-0 tile hash and that leaf SIZE-1 has a valid inclusion proof. It
// returns "checkpoint ORIGIN N ROOTHEX", then "tree SIZE ROOTHEX" and "entry INDEX LEAFHEX"
// per SIZE, then "fetched PATH" for every tile and bundle it read, in order.
func cmdTiles(args []string) (string, error) {
	src := &tileSource{base: strings.TrimSuffix(args[0], "/")}
	v, err := note.NewVerifier(args[1])
	if err != nil {
		return "", fmt.Errorf("verifier key: %v", err)
	}
	msg, err := src.get("checkpoint")
	if err != nil {
		return "", err
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return "", err
	}
	origin, size, root, err := parseCheckpoint(n.Text)
	if err != nil {
		return "", err
	}
	tree := tlog.Tree{N: size, Hash: root}
	thr := tlog.TileHashReader(tree, src)
	var out strings.Builder
	fmt.Fprintf(&out, "checkpoint %s %d %s\n", origin, size, hex.EncodeToString(root[:]))
	for _, s := range strings.Split(args[2], ",") {
		old, err := parseSize(s)
		if err != nil {
			return "", err
		}
		if old < 1 || old > size {
			return "", fmt.Errorf("size %d is not in 1..%d", old, size)
		}
		oldRoot, err := tlog.TreeHash(old, thr)
		if err != nil {
			return "", fmt.Errorf("tree hash at %d: %v", old, err)
		}
		proof, err := tlog.ProveTree(size, old, thr)
		if err != nil {
			return "", fmt.Errorf("consistency proof %d to %d: %v", old, size, err)
		}
		if err := tlog.CheckTree(proof, size, root, old, oldRoot); err != nil {
			return "", err
		}
		fmt.Fprintf(&out, "tree %d %s\n", old, hex.EncodeToString(oldRoot[:]))
		leaf, err := checkEntry(src, thr, tree, old-1)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&out, "entry %d %s\n", old-1, hex.EncodeToString(leaf[:]))
	}
	for _, p := range src.fetched {
		fmt.Fprintf(&out, "fetched %s\n", p)
	}
	return out.String(), nil
}

// checkEntry reads the entry bundle holding leaf index of tree, checks that each of its entries
// hashes to the (authenticated) level-0 hash at its index and that index has an inclusion proof
// to the tree's root, and returns the leaf's hash.
func checkEntry(src *tileSource, thr tlog.HashReader, tree tlog.Tree, index int64) (tlog.Hash, error) {
	var leaf tlog.Hash
	first := index / 256 * 256
	width := tree.N - first
	if width > 256 {
		width = 256
	}
	bundle := tlog.Tile{H: 8, L: -1, N: index / 256, W: int(width)}
	data, err := src.get(c2spPath(bundle))
	if err != nil {
		return leaf, err
	}
	src.fetched = append(src.fetched, c2spPath(bundle))
	entries, err := splitBundle(data)
	if err != nil {
		return leaf, fmt.Errorf("%s: %v", c2spPath(bundle), err)
	}
	if int64(len(entries)) != width {
		return leaf, fmt.Errorf("%s: %d entries, want %d", c2spPath(bundle), len(entries), width)
	}
	indexes := make([]int64, width)
	for i := range indexes {
		indexes[i] = tlog.StoredHashIndex(0, first+int64(i))
	}
	hashes, err := thr.ReadHashes(indexes)
	if err != nil {
		return leaf, err
	}
	for i, e := range entries {
		if tlog.RecordHash(e) != hashes[i] {
			return leaf, fmt.Errorf("entry %d does not hash to its tile's leaf hash", first+int64(i))
		}
	}
	leaf = hashes[index-first]
	proof, err := tlog.ProveRecord(tree.N, index, thr)
	if err != nil {
		return leaf, fmt.Errorf("inclusion proof of %d: %v", index, err)
	}
	if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, leaf); err != nil {
		return leaf, err
	}
	return leaf, nil
}

// splitBundle reads an entry bundle: entries, each after its big-endian uint16 length.
func splitBundle(data []byte) ([][]byte, error) {
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, errors.New("bundle ends inside a length")
		}
		n := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+n {
			return nil, errors.New("bundle ends inside an entry")
		}
		entries = append(entries, data[2:2+n])
		data = data[2+n:]
	}
	return entries, nil
}

// c2spPath is Go's tile path (tile/8/L/N[.p/W], tile/8/data/N for bundles) in the C2SP
// spelling, which has no height element and names bundles "entries".
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), "tile/8/")
	if strings.HasPrefix(p, "data/") {
		p = "entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

// tileSource is a tlog.TileReader of height 8 over HTTP or a directory, recording what it read.
type tileSource struct {
	base    string
	fetched []string
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// get returns the resource at base/path: an HTTP GET that must answer 200, or a file.
func (s *tileSource) get(path string) ([]byte, error) {
	if !strings.HasPrefix(s.base, "http://") && !strings.HasPrefix(s.base, "https://") {
		return os.ReadFile(filepath.Join(s.base, filepath.FromSlash(path)))
	}
	resp, err := httpClient.Get(s.base + "/" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

func (s *tileSource) Height() int { return 8 }

func (s *tileSource) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	for i, t := range tiles {
		p := c2spPath(t)
		b, err := s.get(p)
		if err != nil {
			return nil, err
		}
		if len(b) != t.W*tlog.HashSize {
			return nil, fmt.Errorf("%s: %d bytes, want %d", p, len(b), t.W*tlog.HashSize)
		}
		s.fetched = append(s.fetched, p)
		data[i] = b
	}
	return data, nil
}

func (s *tileSource) SaveTiles([]tlog.Tile, [][]byte) {}
