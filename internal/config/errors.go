package config

import (
	"cmp"
	"errors"
	"slices"
	"strings"

	"github.com/trellis-mesh/trellis/internal/model"
)

// ValidationError is one problem with one resource (or, when Kind is empty,
// with a file as a whole, such as a YAML syntax error). Source.Line is the
// line of the offending field when known, else of the document's start.
type ValidationError struct {
	Source    model.Source
	Kind      string
	Namespace string
	Name      string
	Field     string // e.g. "spec.http[0].route[1].weight"; "" when about the whole resource
	Reason    string
}

// Error formats the problem as "file:line: Kind ns/name: field.path: reason",
// leaving out the parts that are unknown.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(e.Source.String())
	b.WriteString(": ")
	if e.Kind != "" {
		b.WriteString(e.Kind)
		if e.Name != "" {
			b.WriteString(" ")
			b.WriteString(e.Namespace)
			b.WriteString("/")
			b.WriteString(e.Name)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Warning is something the user should know about that does not make the
// config invalid, such as an Istio kind Trellis does not handle yet.
type Warning struct {
	Source  model.Source
	Message string
}

func (w Warning) String() string { return w.Source.String() + ": " + w.Message }

// joinErrors sorts errs by file and line, so a user reads them top to
// bottom, and joins them; nil when there are none.
func joinErrors(errs []*ValidationError) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *ValidationError) int {
		return cmp.Or(cmp.Compare(a.Source.File, b.Source.File), cmp.Compare(a.Source.Line, b.Source.Line))
	})
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// ValidationErrors flattens an error from a loader (an errors.Join of
// *ValidationError, possibly nested) into its *ValidationErrors; anything
// else becomes one with just a reason.
func ValidationErrors(err error) []*ValidationError {
	var ve *ValidationError
	if errors.As(err, &ve) && ve == err {
		return []*ValidationError{ve}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*ValidationError
		for _, e := range j.Unwrap() {
			out = append(out, ValidationErrors(e)...)
		}
		return out
	}
	return []*ValidationError{{Reason: err.Error()}}
}
