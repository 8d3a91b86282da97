package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// publishCommand is "verbund publish": signed registry commands from a file.
func publishCommand() Command {
	return Command{
		Name:    "publish",
		Summary: "sign registry commands from a JSON or YAML file and publish them",
		Run:     publish,
	}
}

const publishSynopsis = "publish -f FILE [--key KEYFILE] [--org ISSUER] [flags]"

const publishHelp = `Sign registry commands with the organisation's private key and publish them.

FILE holds a command document in JSON or YAML (chosen by the extension
.json, .yaml or .yml, else sniffed) with protojson field names, or a list of
such documents; "-" reads stdin. YAML files may hold several documents.

  {"issuer": "091620000000",
   "mutations": [{"putOffering": {"id": "...", "leikaKey": "99...", ...}}]}

"id" and "issuedAtUnixMs" are filled in when absent. Every command is checked
and signed before anything is sent. The exit code is 1 if any command fails.
Examples: cli/testdata/offering.json, cli/testdata/offering.yaml.`

func publish(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(publishSynopsis, publishHelp)
	o := clientFlags(fs, false)
	var file, keyFile, org string
	fs.StringVar(&file, "f", "", "command `file`, JSON or YAML (- for stdin)")
	fs.StringVar(&keyFile, "key", os.Getenv("VERBUND_KEY"), "`keyfile` with the private signing JWK, mode 0600 (env VERBUND_KEY)")
	fs.StringVar(&org, "org", "", "issuer organisation `id`; overrides the issuer in FILE")
	fs.check(func() error {
		if file == "" {
			return errors.New("-f FILE is required")
		}
		if org != "" && !registry.ValidOrgID(org) {
			return fmt.Errorf("--org %q: want a 12-digit ARS or a slug", org)
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}

	cmds, err := loadCommands(file, env.stdin())
	if err != nil {
		return err
	}
	name := displayName(file)
	now := time.Now().UnixMilli()
	for i, c := range cmds {
		if org != "" {
			c.Issuer = org
		}
		if c.GetIssuer() == "" {
			return fmt.Errorf("%s: command %d: no issuer (set \"issuer\" in the file or use --org)", name, i+1)
		}
		if c.GetId() == "" {
			c.Id = registry.NewCommandID()
		}
		if c.GetIssuedAtUnixMs() == 0 {
			c.IssuedAtUnixMs = now
		}
		if err := registry.ValidateCommand(c); err != nil {
			return fmt.Errorf("%s: command %d: %w", name, i+1, err)
		}
	}

	if keyFile == "" {
		return errors.New("no signing key: use --key KEYFILE or set VERBUND_KEY")
	}
	key, err := keys.Load(keyFile)
	if err != nil {
		return err
	}
	signed := make([]string, len(cmds))
	for i, c := range cmds {
		if signed[i], err = registry.SignCommand(c, key); err != nil {
			return fmt.Errorf("%s: command %d: %w", name, i+1, err)
		}
	}

	ctx, cancel := o.context(ctx)
	defer cancel()
	pub := o.publisher()
	out := &registryv1.PublishResponse{}
	for start := 0; start < len(signed); start += registry.MaxCommandsPerRequest {
		end := min(start+registry.MaxCommandsPerRequest, len(signed))
		resp, err := pub.Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: signed[start:end]}))
		if err != nil {
			err = o.rpcErr(err)
			if start > 0 {
				err = fmt.Errorf("%w (commands 1-%d had been published before)", err, start)
			}
			return err
		}
		res := resp.Msg.GetResults()
		for i := start; i < end; i++ {
			r := &registryv1.CommandResult{CommandId: cmds[i].GetId(), ErrorCode: "no_result", ErrorMessage: "the node returned no result for this command"}
			if j := i - start; j < len(res) {
				r = res[j]
			}
			out.Results = append(out.Results, r)
		}
		out.Index = resp.Msg.GetIndex()
	}

	failed := 0
	for _, r := range out.Results {
		if r.GetErrorCode() != "" {
			failed++
		}
	}
	if o.json() {
		if err := writeJSON(env.Stdout, out); err != nil {
			return err
		}
	} else {
		writePublishResults(env.Stdout, cmds, out)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d commands failed", failed, len(cmds))
	}
	return nil
}

func writePublishResults(w io.Writer, cmds []*registryv1.Command, out *registryv1.PublishResponse) {
	tw := newTable(w)
	row(tw, "#", "COMMAND", "ISSUER", "MUTATIONS", "RESULT")
	applied := 0
	for i, r := range out.GetResults() {
		if r.GetErrorCode() == "" {
			applied++
		}
		var result string
		switch {
		case r.GetErrorCode() != "":
			result = "failed: " + r.GetErrorCode()
			if msg := oneLine(r.GetErrorMessage(), 0); msg != "" {
				result += ": " + msg
			}
		case r.GetDuplicate():
			result = fmt.Sprintf("duplicate, already applied at index %d", r.GetIndex())
		default:
			result = fmt.Sprintf("applied at index %d", r.GetIndex())
		}
		id := r.GetCommandId()
		if id == "" {
			id = cmds[i].GetId()
		}
		row(tw, strconv.Itoa(i+1), id, cmds[i].GetIssuer(), strconv.Itoa(len(cmds[i].GetMutations())), result)
	}
	tw.Flush()
	if out.GetIndex() > 0 && applied > 0 {
		fmt.Fprintf(w, "\n(committed up to index %d; read your writes on any node with --min-index %d)\n", out.GetIndex(), out.GetIndex())
	}
}

func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// loadCommands reads the command documents of a JSON or YAML file.
func loadCommands(path string, stdin io.Reader) ([]*registryv1.Command, error) {
	name := displayName(path)
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var docs []doc
	isYAML := false
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
	case ".yaml", ".yml":
		isYAML = true
	default:
		t := bytes.TrimLeft(data, " \t\r\n\ufeff")
		isYAML = len(t) == 0 || (t[0] != '{' && t[0] != '[')
	}
	if isYAML {
		docs, err = yamlDocuments(data)
	} else {
		docs, err = jsonDocuments(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no commands", name)
	}
	cmds := make([]*registryv1.Command, len(docs))
	for i, d := range docs {
		c := &registryv1.Command{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(d.json, c); err != nil {
			return nil, fmt.Errorf("%s: command %d: %s", name, i+1, protoErr(err, data, d))
		}
		cmds[i] = c
	}
	return cmds, nil
}

// doc is one command document as JSON.
type doc struct {
	json []byte
	// base is the offset of json in the file, or -1 when json was
	// converted from YAML and positions in it mean nothing to the user.
	base int
}

// reProtoErr matches the head of a protojson error: "proto: (line 1:2): "
// or "proto: syntax error (line 1:2): ". protojson deliberately varies the
// space after "proto:" (it may be U+00A0).
var reProtoErr = regexp.MustCompile(`^proto:[\s\x{a0}]*(?:syntax error[\s\x{a0}]*)?(?:\(line (\d+):(\d+)\):[\s\x{a0}]*)?`)

// protoErr rewrites a protojson error with a position in the file.
func protoErr(err error, file []byte, d doc) string {
	msg := err.Error()
	m := reProtoErr.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	rest := msg[len(m[0]):]
	if m[1] == "" || d.base < 0 {
		return rest
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	// Offset of line:col in the document, then in the file.
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(d.json[off:], '\n')
		if i < 0 {
			break
		}
		off += i + 1
	}
	for c := 1; c < col && off < len(d.json); c++ {
		_, n := utf8.DecodeRune(d.json[off:])
		off += n
	}
	fl, fc := position(file, int64(d.base+off))
	return fmt.Sprintf("line %d, column %d: %s", fl, fc, rest)
}

// jsonDocuments splits a JSON object or array of objects into documents.
func jsonDocuments(data []byte) ([]doc, error) {
	var raw json.RawMessage
	if err := json.Unmarshal(bytes.TrimPrefix(data, []byte("\ufeff")), &raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off := se.Offset - 1 // Offset is just past the offending byte
			if bytes.HasPrefix(data, []byte("\ufeff")) {
				off += 3
			}
			line, col := position(data, off)
			return nil, fmt.Errorf("invalid JSON at line %d, column %d: %v", line, col, err)
		}
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	start := len(data) - len(bytes.TrimLeft(data, " \t\r\n\ufeff"))
	switch data[start] {
	case '{':
		return []doc{{json: raw, base: start}}, nil
	case '[':
		dec := json.NewDecoder(bytes.NewReader(data[start:]))
		if _, err := dec.Token(); err != nil {
			return nil, fmt.Errorf("invalid JSON: %v", err)
		}
		var docs []doc
		for dec.More() {
			var d json.RawMessage
			if err := dec.Decode(&d); err != nil {
				return nil, fmt.Errorf("invalid JSON: %v", err)
			}
			if d[0] != '{' {
				return nil, fmt.Errorf("command %d: want a JSON object", len(docs)+1)
			}
			docs = append(docs, doc{json: d, base: start + int(dec.InputOffset()) - len(d)})
		}
		return docs, nil
	}
	return nil, errors.New("want a JSON object or an array of objects")
}

// position turns a byte offset into a 1-based line and column (in runes).
func position(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
	return line, col
}

// yamlDocuments converts the documents of a YAML stream to JSON; a
// document that is a sequence contributes one command per item.
func yamlDocuments(data []byte) ([]doc, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []doc
	for n := 1; ; n++ {
		var node yaml.Node
		if err := dec.Decode(&node); err != nil {
			if errors.Is(err, io.EOF) {
				return docs, nil
			}
			return nil, fmt.Errorf("invalid YAML: %v", err)
		}
		if len(node.Content) == 0 {
			continue
		}
		root := node.Content[0]
		for root.Kind == yaml.AliasNode {
			root = root.Alias
		}
		items := []*yaml.Node{root}
		if root.Kind == yaml.SequenceNode {
			items = root.Content
		}
		for _, it := range items {
			c := &yamlConv{}
			v, err := c.value(it)
			if err != nil {
				return nil, err
			}
			if _, ok := v.(map[string]any); !ok {
				return nil, fmt.Errorf("line %d: want a mapping (a command document)", it.Line)
			}
			b, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", it.Line, err)
			}
			docs = append(docs, doc{json: b, base: -1})
		}
	}
}

// yamlConv converts YAML nodes to JSON values. Numbers are passed on as
// strings: protojson accepts strings for numeric fields, and keys such as
// ARS, AGS, LeiKa keys and postal codes stay intact ("091620000000" is a
// string field even when written without quotes).
type yamlConv struct{ nodes int }

const maxYAMLNodes = 1 << 20 // guards against alias expansion bombs

func (c *yamlConv) value(n *yaml.Node) (any, error) {
	if c.nodes++; c.nodes > maxYAMLNodes {
		return nil, errors.New("YAML document too large (alias expansion?)")
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.value(n.Content[0])
	case yaml.AliasNode:
		return c.value(n.Alias)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, it := range n.Content {
			v, err := c.value(it)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: mapping keys must be plain names", k.Line)
			}
			if k.ShortTag() == "!!merge" {
				return nil, fmt.Errorf("line %d: merge keys (<<) are not supported", k.Line)
			}
			val, err := c.value(v)
			if err != nil {
				return nil, err
			}
			out[k.Value] = val
		}
		return out, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			b, err := strconv.ParseBool(strings.ToLower(n.Value))
			if err != nil {
				return nil, fmt.Errorf("line %d: invalid boolean %q", n.Line, n.Value)
			}
			return b, nil
		default: // !!str, !!int, !!float, !!timestamp, !!binary
			return n.Value, nil
		}
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}
