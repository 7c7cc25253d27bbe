package testenv

import (
	"bytes"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// CompileSchema compiles the JSON Schema doc (for example events.Schema,
// the record schema) with a real JSON Schema 2020-12 validator.
func CompileSchema(t testing.TB, doc []byte) *jsonschema.Schema {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", v); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ValidateJSON reports whether rec is JSON that s accepts (nil) or why not.
func ValidateJSON(s *jsonschema.Schema, rec []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(rec))
	if err != nil {
		return err
	}
	return s.Validate(v)
}
