package main

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/praas-dev/praas/client"
)

// --json prints the client's types, which must carry the fields the API's
// objects have (docs/openapi.yaml), so that a field the control plane adds
// shows in the CLI's JSON too.
func TestJSONHasTheAPIsFields(t *testing.T) {
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]yaml.Node `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		schema string
		v      any
		left   []string // API fields the CLI leaves out on purpose
	}{
		{"App", client.App{}, nil},
		{"Process", client.Process{}, []string{"usage_base"}}, // bookkeeping across replicas
		{"Key", client.Key{}, nil},
	} {
		var api []string
		for name := range doc.Components.Schemas[tc.schema].Properties {
			api = append(api, name)
		}
		if len(api) == 0 {
			t.Fatalf("no schema %s in docs/openapi.yaml", tc.schema)
		}
		var cli []string
		rt := reflect.TypeOf(tc.v)
		for f := range rt.Fields() {
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
				cli = append(cli, name)
			}
		}
		for _, f := range api {
			if !slices.Contains(cli, f) && !slices.Contains(tc.left, f) {
				t.Errorf("%T lacks %q, which the API's %s has: praas --json would not show it", tc.v, f, tc.schema)
			}
		}
		for _, f := range cli {
			if !slices.Contains(api, f) {
				t.Errorf("%T has %q, which the API's %s has not (docs/openapi.yaml)", tc.v, f, tc.schema)
			}
		}
	}
}
