// Package strictyaml decodes YAML (or JSON) strictly, as sigs.k8s.io/yaml.UnmarshalStrict
// does (unknown or duplicate fields are errors; scalars are converted to the target's
// type, so `nodeName: n` is the string "n"), and also refuses field names that match
// only case-insensitively: encoding/json, under sigs.k8s.io/yaml, takes "ApiVersion" or
// "sYstemReserved" for apiVersion and systemReserved, where the API machinery's decoders
// (sigs.k8s.io/json, case-sensitive) do not.
package strictyaml

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"
)

// Unmarshal decodes data into v strictly and case-sensitively.
func Unmarshal(data []byte, v any) error {
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		return err
	}
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return err
	}
	return checkCase(tree, reflect.TypeOf(v), "")
}

var (
	jsonUnmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()
	textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// checkCase walks the decoded document along the Go type: every key of an object
// decoded into a struct must be one of its JSON field names exactly, when it matches one
// only case-insensitively.
func checkCase(node any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return nil // decodes itself (Quantity, Duration, IntOrString, Time, ...)
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		fields := map[string]reflect.Type{}
		jsonFields(t, fields)
		for k, child := range obj {
			ft, ok := fields[k]
			if !ok {
				for name := range fields {
					if strings.EqualFold(name, k) {
						return fmt.Errorf("unknown field %q (the field is %q: names are case-sensitive)", path+k, path+name)
					}
				}
				continue // unknown: yaml.UnmarshalStrict refused it already
			}
			if err := checkCase(child, ft, path+k+"."); err != nil {
				return err
			}
		}
	case reflect.Map:
		if obj, ok := node.(map[string]any); ok {
			for k, child := range obj {
				if err := checkCase(child, t.Elem(), path+k+"."); err != nil {
					return err
				}
			}
		}
	case reflect.Slice, reflect.Array:
		if list, ok := node.([]any); ok {
			for i, child := range list {
				if err := checkCase(child, t.Elem(), fmt.Sprintf("%s%d.", strings.TrimSuffix(path, "."), i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// jsonFields collects a struct's JSON field names and types, inline (embedded) ones included.
func jsonFields(t reflect.Type, out map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				jsonFields(ft, out)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
}
