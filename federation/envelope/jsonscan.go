package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// checkJSON scans untrusted JSON before it is given to encoding/json. It
// runs in one pass without recursion and refuses
//   - nesting deeper than MaxJSONDepth (ErrNesting), and
//   - duplicate object keys, compared the way encoding/json matches struct
//     fields (case-insensitively), so that {"aud":"x","AUD":"y"} cannot be
//     read differently by two parsers (ErrMalformed).
//
// It does not validate the JSON otherwise; encoding/json does that next.
func checkJSON(b []byte) error {
	type frame struct {
		object    bool
		expectKey bool
		keys      map[string]struct{}
	}
	var stack [MaxJSONDepth]frame
	depth := 0
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '{', '[':
			if depth >= MaxJSONDepth {
				return fmt.Errorf("%w: more than %d levels", ErrNesting, MaxJSONDepth)
			}
			stack[depth] = frame{object: c == '{', expectKey: c == '{'}
			depth++
		case '}', ']':
			if depth == 0 {
				return fmt.Errorf("%w: unbalanced %q in JSON", ErrMalformed, c)
			}
			depth--
			stack[depth] = frame{}
		case ',':
			if depth > 0 && stack[depth-1].object {
				stack[depth-1].expectKey = true
			}
		case '"':
			j := i + 1
			escaped := false
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					escaped = true
					j++
				}
				j++
			}
			if j >= len(b) {
				return fmt.Errorf("%w: unterminated JSON string", ErrMalformed)
			}
			if depth > 0 && stack[depth-1].object && stack[depth-1].expectKey {
				f := &stack[depth-1]
				f.expectKey = false
				key, err := jsonKey(b[i:j+1], escaped)
				if err != nil {
					return err
				}
				key = foldKey(key)
				if f.keys == nil {
					f.keys = make(map[string]struct{}, 8)
				}
				if _, dup := f.keys[key]; dup {
					return fmt.Errorf("%w: duplicate JSON key %q", ErrMalformed, key)
				}
				f.keys[key] = struct{}{}
			}
			i = j
		}
	}
	if depth != 0 {
		return fmt.Errorf("%w: unbalanced JSON", ErrMalformed)
	}
	return nil
}

func jsonKey(quoted []byte, escaped bool) (string, error) {
	if !escaped {
		return string(quoted[1 : len(quoted)-1]), nil
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return "", fmt.Errorf("%w: bad JSON key: %v", ErrMalformed, err)
	}
	return s, nil
}

// foldKey maps s to a canonical representative of its simple case-folding
// class, so foldKey(a) == foldKey(b) exactly when bytes.EqualFold(a, b) —
// the rule encoding/json uses to match object keys to struct fields.
func foldKey(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// 'k' and 's' fold with non-ASCII runes (Kelvin sign, long s) whose
		// orbit minimum is still the ASCII upper case letter.
		return strings.ToUpper(s)
	}
	var sb strings.Builder
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < m {
				m = f
			}
		}
		sb.WriteRune(m)
	}
	return sb.String()
}

// decodeStrict unmarshals a JSON object that checkJSON has accepted into v,
// refusing unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after JSON", ErrMalformed)
	}
	return nil
}
