package model

import (
	"reflect"
	"slices"
	"testing"
)

// TestEndpointDeltaKnowsEveryConfigField fails when model.Config or
// model.Endpoint gains a field EndpointDelta does not compare: decide how
// a change of it reaches translation, then list it.
func TestEndpointDeltaKnowsEveryConfigField(t *testing.T) {
	for _, c := range []struct {
		typ   reflect.Type
		known []string
	}{
		{reflect.TypeFor[Config](), deltaConfigFields},
		{reflect.TypeFor[Endpoint](), deltaEndpointFields},
	} {
		for f := range c.typ.Fields() {
			if !slices.Contains(c.known, f.Name) {
				t.Errorf("%s.%s is not compared by EndpointDelta", c.typ.Name(), f.Name)
			}
		}
	}
}
