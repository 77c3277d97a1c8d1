package controlplane

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/proclog"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/memory"
)

// openAPIFile is the OpenAPI description of the REST API.
const openAPIFile = "../docs/openapi.yaml"

// undocumentedPrefix marks the internal API, which docs/openapi.yaml leaves
// out on purpose (its description says why).
const undocumentedPrefix = "/internal/"

// openAPIMethods are the operations of an OpenAPI path item.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// routeServer is a control plane with every optional route turned on, so
// that Routes lists all that a deployment may serve. A route served only
// under some configuration is turned on here.
func routeServer(t *testing.T) *Server {
	t.Helper()
	s, err := New(Config{Metadata: memory.New(), Backend: newFakeBackend(t, nil), SigningKey: testSigningKey, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openAPIRoute turns a ServeMux pattern into "METHOD /path" as OpenAPI
// spells it: a pattern without a method (which serves every method) is
// documented as GET, "{name...}" as "{name}", and a trailing "{$}" (the
// exact path) goes.
func openAPIRoute(pattern string) string {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = http.MethodGet, pattern
	}
	path = strings.TrimSuffix(path, "{$}")
	path = strings.ReplaceAll(path, "...}", "}")
	return method + " " + path
}

// openAPIDoc is the part of an OpenAPI document the tests read.
type openAPIDoc struct {
	OpenAPI string                          `yaml:"openapi"`
	Paths   map[string]map[string]yaml.Node `yaml:"paths"`
}

func readOpenAPI(t *testing.T) (openAPIDoc, *yaml.Node) {
	t.Helper()
	raw, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPIDoc
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", openAPIFile, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("%s: openapi %q, want 3.x", openAPIFile, doc.OpenAPI)
	}
	return doc, &root
}

// documentedRoutes returns "METHOD /path" for every operation of the document.
func documentedRoutes(doc openAPIDoc) []string {
	var routes []string
	for path, item := range doc.Paths {
		for _, m := range openAPIMethods {
			if _, ok := item[m]; ok {
				routes = append(routes, strings.ToUpper(m)+" "+path)
			}
		}
	}
	slices.Sort(routes)
	return routes
}

// Every route the control plane serves is in docs/openapi.yaml, and every
// route there is served.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	s := routeServer(t)
	doc, _ := readOpenAPI(t)

	served := map[string]string{} // OpenAPI route → ServeMux pattern
	for _, p := range s.Routes() {
		r := openAPIRoute(p)
		if strings.HasPrefix(strings.SplitN(r, " ", 2)[1], undocumentedPrefix) {
			continue
		}
		served[r] = p
	}
	documented := documentedRoutes(doc)

	var missing, extra []string
	for r, p := range served {
		if !slices.Contains(documented, r) {
			missing = append(missing, fmt.Sprintf("%s (registered as %q)", r, p))
		}
	}
	for _, r := range documented {
		if _, ok := served[r]; !ok {
			extra = append(extra, r)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("the control plane serves routes that %s does not describe; "+
			"whoever adds a route documents it there (paths:, with its parameters, request and response schemas, status codes) "+
			"and in docs/api.md:\n\t%s", openAPIFile, strings.Join(missing, "\n\t"))
	}
	if len(extra) > 0 {
		t.Errorf("%s describes routes the control plane does not serve (removed or renamed? "+
			"a route served only under some configuration is turned on in routeServer):\n\t%s", openAPIFile, strings.Join(extra, "\n\t"))
	}

	// Each documented route reaches its own handler, not the catch-all 404
	// nor another pattern.
	for _, r := range documented {
		method, path, _ := strings.Cut(r, " ")
		if strings.HasPrefix(path, undocumentedPrefix) {
			t.Errorf("%s describes %s, which is internal and left out on purpose", openAPIFile, r)
			continue
		}
		req := httptest.NewRequest(method, pathParam.ReplaceAllString(path, "x"), nil)
		if _, pattern := s.mux.Handler(req); openAPIRoute(pattern) != r {
			t.Errorf("%s %s: the server routes it to %q, not to %s", method, req.URL.Path, pattern, r)
		}
	}
}

// pathParam matches a parameter of an OpenAPI path template.
var pathParam = regexp.MustCompile(`\{[^}/]+\}`)

// docs/openapi.yaml is consistent: every $ref points to a component that
// exists, schemas, responses and parameters have only the fields OpenAPI
// knows (an unquoted comma in a flow mapping makes a stray one), every
// operation has responses, and every parameter of a path template is
// declared as a path parameter of its path or operation.
func TestOpenAPIIsConsistent(t *testing.T) {
	doc, root := readOpenAPI(t)
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "$ref" {
					if ref := n.Content[i+1].Value; lookupRef(root, ref) == nil {
						t.Errorf("%s line %d: $ref %q points to nothing", openAPIFile, n.Content[i+1].Line, ref)
					}
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(root)
	checkObjects(t, root)

	for path, item := range doc.Paths {
		declared := pathParams(t, root, item["parameters"])
		for _, m := range openAPIMethods {
			op, ok := item[m]
			if !ok {
				continue
			}
			var opDoc struct {
				Parameters yaml.Node            `yaml:"parameters"`
				Responses  map[string]any       `yaml:"responses"`
				Extra      map[string]yaml.Node `yaml:",inline"`
			}
			if err := op.Decode(&opDoc); err != nil {
				t.Fatalf("%s %s: %v", m, path, err)
			}
			if len(opDoc.Responses) == 0 {
				t.Errorf("%s %s has no responses", strings.ToUpper(m), path)
			}
			all := append(slices.Clone(declared), pathParams(t, root, opDoc.Parameters)...)
			for _, p := range pathParam.FindAllString(path, -1) {
				if name := strings.Trim(p, "{}"); !slices.Contains(all, name) {
					t.Errorf("%s %s: path parameter %q is not declared", strings.ToUpper(m), path, name)
				}
			}
		}
	}
}

// pathParams returns the names of the path parameters in a parameters list,
// following $refs.
func pathParams(t *testing.T, root *yaml.Node, list yaml.Node) []string {
	t.Helper()
	var names []string
	for _, p := range list.Content {
		if ref := mapValue(p, "$ref"); ref != nil {
			if p = lookupRef(root, ref.Value); p == nil {
				continue // reported by the $ref check
			}
		}
		if in := mapValue(p, "in"); in != nil && in.Value == "path" {
			if name := mapValue(p, "name"); name != nil {
				names = append(names, name.Value)
			}
		}
	}
	return names
}

// lookupRef resolves a local $ref ("#/components/schemas/App") in the
// document, or returns nil.
func lookupRef(root *yaml.Node, ref string) *yaml.Node {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok || root == nil || len(root.Content) == 0 {
		return nil
	}
	n := root.Content[0]
	for _, part := range strings.Split(rest, "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		if n = mapValue(n, part); n == nil {
			return nil
		}
	}
	return n
}

// mapValue returns the value of key in a YAML mapping, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// The fields of the OpenAPI objects checkObjects looks into.
var (
	schemaFields = fieldSet("$ref", "type", "format", "description", "properties", "required", "items",
		"additionalProperties", "enum", "example", "examples", "default", "nullable", "minimum", "maximum",
		"minLength", "maxLength", "pattern", "minItems", "maxItems", "oneOf", "anyOf", "allOf", "not",
		"readOnly", "writeOnly", "deprecated", "title", "exclusiveMinimum", "exclusiveMaximum", "const")
	responseFields  = fieldSet("$ref", "description", "headers", "content", "links")
	parameterFields = fieldSet("$ref", "name", "in", "description", "required", "deprecated", "allowEmptyValue",
		"style", "explode", "allowReserved", "schema", "example", "examples", "content")
)

func fieldSet(names ...string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return set
}

// checkObjects reports fields that OpenAPI does not know in every schema,
// response and parameter of the document.
func checkObjects(t *testing.T, root *yaml.Node) {
	t.Helper()
	check := func(n *yaml.Node, fields map[string]bool, what string) {
		if n == nil || n.Kind != yaml.MappingNode {
			if n != nil {
				t.Errorf("%s line %d: a %s that is not a mapping", openAPIFile, n.Line, what)
			}
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; !fields[k.Value] {
				t.Errorf("%s line %d: %q is not a field of a %s (an unquoted comma in {...}?)", openAPIFile, k.Line, k.Value, what)
			}
		}
	}
	var schema func(n *yaml.Node)
	schema = func(n *yaml.Node) {
		check(n, schemaFields, "schema")
		for _, k := range []string{"items", "additionalProperties", "not"} {
			if v := mapValue(n, k); v != nil && v.Kind == yaml.MappingNode {
				schema(v)
			}
		}
		if props := mapValue(n, "properties"); props != nil {
			for i := 1; i < len(props.Content); i += 2 {
				schema(props.Content[i])
			}
		}
		for _, k := range []string{"oneOf", "anyOf", "allOf"} {
			if list := mapValue(n, k); list != nil {
				for _, v := range list.Content {
					schema(v)
				}
			}
		}
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind != yaml.MappingNode {
			for _, c := range n.Content {
				walk(c)
			}
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			switch {
			case k == "schema":
				schema(v)
			case k == "schemas" && v.Kind == yaml.MappingNode:
				for j := 1; j < len(v.Content); j += 2 {
					schema(v.Content[j])
				}
			case k == "responses" && v.Kind == yaml.MappingNode:
				for j := 1; j < len(v.Content); j += 2 {
					check(v.Content[j], responseFields, "response")
					walk(v.Content[j])
				}
			case k == "parameters" && v.Kind == yaml.MappingNode: // components
				for j := 1; j < len(v.Content); j += 2 {
					check(v.Content[j], parameterFields, "parameter")
					walk(v.Content[j])
				}
			case k == "parameters" && v.Kind == yaml.SequenceNode:
				for _, p := range v.Content {
					check(p, parameterFields, "parameter")
					walk(p)
				}
			default:
				walk(v)
			}
		}
	}
	walk(root)
}

// The schemas of docs/openapi.yaml have the fields the API's JSON has, no
// more and no fewer: a field added to a type the API answers with is
// documented with it.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	_, root := readOpenAPI(t)
	for name, v := range map[string]any{
		"App":       appView{},
		"Process":   processView{},
		"Key":       keyView{},
		"Resources": store.Resources{},
		"Usage":     store.Usage{},
		// The observability routes'.
		"AppUsage":     client.AppUsage{},
		"ProcessUsage": client.ProcessUsage{},
		"UsageFigures": client.UsageFigures{},
		"Event":        Event{},
		"Status":       statusView{},
		"StoreHealth":  storeHealth{},
		"LogLine":      proclog.Line{},
	} {
		schema := lookupRef(root, "#/components/schemas/"+name)
		if schema == nil {
			t.Errorf("%s has no schema %s", openAPIFile, name)
			continue
		}
		documented := schemaProperties(root, schema)
		served := jsonFields(reflect.TypeOf(v))
		for _, f := range served {
			if !slices.Contains(documented, f) {
				t.Errorf("schema %s in %s lacks %q, which the API's JSON has (%T)", name, openAPIFile, f, v)
			}
		}
		for _, f := range documented {
			if !slices.Contains(served, f) {
				t.Errorf("schema %s in %s has %q, which the API's JSON (%T) has not", name, openAPIFile, f, v)
			}
		}
	}
}

// jsonFields returns the names encoding/json gives the fields of struct
// type t, embedded structs' included.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" || !f.IsExported():
			continue
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			names = append(names, jsonFields(f.Type)...)
			continue
		case name == "":
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

// schemaProperties returns the property names of a schema, with those of
// the schemas it combines with allOf.
func schemaProperties(root, schema *yaml.Node) []string {
	if ref := mapValue(schema, "$ref"); ref != nil {
		if schema = lookupRef(root, ref.Value); schema == nil {
			return nil
		}
	}
	var names []string
	if props := mapValue(schema, "properties"); props != nil {
		for i := 0; i < len(props.Content); i += 2 {
			names = append(names, props.Content[i].Value)
		}
	}
	if all := mapValue(schema, "allOf"); all != nil {
		for _, part := range all.Content {
			names = append(names, schemaProperties(root, part)...)
		}
	}
	return names
}

// The security docs/openapi.yaml gives each route holds: a route it says
// needs no key (security: []) answers without one, and every other route
// answers 401 without one when authentication is on.
func TestOpenAPISecurity(t *testing.T) {
	doc, _ := readOpenAPI(t)
	s, err := New(Config{Metadata: memory.New(), Backend: newFakeBackend(t, nil), SigningKey: testSigningKey})
	if err != nil {
		t.Fatal(err)
	}
	for path, item := range doc.Paths {
		for _, m := range openAPIMethods {
			op, ok := item[m]
			if !ok {
				continue
			}
			sec := mapValue(&op, "security")
			public := sec != nil && sec.Kind == yaml.SequenceNode && len(sec.Content) == 0
			method := strings.ToUpper(m)
			req := httptest.NewRequest(method, pathParam.ReplaceAllString(path, "x"), strings.NewReader("{}"))
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			switch {
			case public && rec.Code == http.StatusUnauthorized:
				t.Errorf("%s %s: %s says it needs no key, but it answers 401 without one", method, path, openAPIFile)
			case !public && rec.Code != http.StatusUnauthorized:
				t.Errorf("%s %s: answers %d without a key; %s says it needs one (give it security: [] if it does not)", method, path, rec.Code, openAPIFile)
			}
		}
	}
}
