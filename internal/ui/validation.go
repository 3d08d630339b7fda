package ui

import (
	"errors"

	"github.com/trellis-mesh/trellis/internal/config"
)

// validationOf lists the rejected config's problems, one message each,
// then the current warnings.
func validationOf(rejected error, warnings []config.Warning) Validation {
	out := Validation{OK: rejected == nil, Messages: []ValidationMessage{}}
	if rejected != nil {
		var errs []error
		var joined interface{ Unwrap() []error }
		if errors.As(rejected, &joined) {
			errs = joined.Unwrap()
		} else {
			errs = []error{rejected}
		}
		for _, e := range errs {
			m := ValidationMessage{Level: "error", Reason: e.Error(), Text: e.Error()}
			var ve *config.ValidationError
			if errors.As(e, &ve) {
				m.Source = ve.Source.String()
				if ve.Kind != "" {
					m.Resource = ve.Kind
					if ve.Name != "" {
						m.Resource += " " + ve.Namespace + "/" + ve.Name
					}
				}
				m.Field = ve.Field
				m.Reason = ve.Reason
			}
			out.Messages = append(out.Messages, m)
		}
	}
	for _, w := range warnings {
		out.Messages = append(out.Messages, ValidationMessage{
			Level: "warning", Source: w.Source.String(), Reason: w.Message, Text: w.String(),
		})
	}
	return out
}
