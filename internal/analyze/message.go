package analyze

import (
	"fmt"
	"strings"
)

// Level is how serious a Message is, as istioctl analyze grades them.
type Level int

// Levels, least serious first.
const (
	Info Level = iota
	Warning
	Error
)

var levelNames = [...]string{"Info", "Warning", "Error"}

func (l Level) String() string {
	if l < Info || l > Error {
		return fmt.Sprintf("Level(%d)", int(l))
	}
	return levelNames[l]
}

// ParseLevel reads "Info", "Warning" or "Error" (any case).
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if strings.EqualFold(s, n) {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("unknown level %q: want Info, Warning or Error", s)
}

// MarshalText writes the level's name, so JSON and YAML output read as istioctl's.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a level's name.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	*l = v
	return err
}

// Code is one kind of finding: istioctl's code and level where Istio has
// the same check, else a TRL code. docs/analyze.md lists them all.
type Code struct {
	ID    string // "IST0101"
	Name  string // "ReferencedResourceNotFound"
	Level Level
}

// The codes Trellis reports.
var (
	ReferencedResourceNotFound                = Code{"IST0101", "ReferencedResourceNotFound", Error}
	SchemaValidationError                     = Code{"IST0106", "SchemaValidationError", Error}
	ConflictingMeshGatewayVirtualServiceHosts = Code{"IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Error}
	NoMatchingWorkloadsFound                  = Code{"IST0127", "NoMatchingWorkloadsFound", Warning}
	VirtualServiceUnreachableRule             = Code{"IST0130", "VirtualServiceUnreachableRule", Warning}
	VirtualServiceIneffectiveMatch            = Code{"IST0131", "VirtualServiceIneffectiveMatch", Info}
	VirtualServiceHostNotFoundInGateway       = Code{"IST0132", "VirtualServiceHostNotFoundInGateway", Warning}
	DestinationRuleSubsetNotSelectPods        = Code{"IST0173", "DestinationRuleSubsetNotSelectPods", Warning}
	// DestinationRuleHostNotFound: Istio has the check (UnknownDestinationRuleHost)
	// in the same analyzer as IST0173, but its code could not be confirmed.
	DestinationRuleHostNotFound = Code{"TRL0001", "DestinationRuleHostNotFound", Warning}
	// IgnoredResource is a loader warning: a kind Trellis does not handle yet.
	IgnoredResource = Code{"TRL0002", "IgnoredResource", Info}
)

// Codes lists every code, for docs and --suppress checks.
var Codes = []Code{
	ReferencedResourceNotFound, SchemaValidationError, ConflictingMeshGatewayVirtualServiceHosts,
	NoMatchingWorkloadsFound, VirtualServiceUnreachableRule, VirtualServiceIneffectiveMatch,
	VirtualServiceHostNotFoundInGateway, DestinationRuleSubsetNotSelectPods,
	DestinationRuleHostNotFound, IgnoredResource,
}

// Resource names what a Message is about and where it was read.
type Resource struct {
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	File      string `json:"file,omitempty"`
	Line      int    `json:"line,omitempty"`
}

// Message is one finding.
type Message struct {
	Code     string   `json:"code"`
	Level    Level    `json:"level"`
	Resource Resource `json:"resource"`
	Field    string   `json:"field,omitempty"` // e.g. "spec.http[0].route[0].destination.host"
	Text     string   `json:"message"`
}

func newMessage(c Code, r Resource, field, format string, args ...any) Message {
	return Message{Code: c.ID, Level: c.Level, Resource: r, Field: field, Text: fmt.Sprintf(format, args...)}
}

// String is istioctl's line: `Error [IST0101] (VirtualService default/reviews
// reviews.yaml:12) Referenced host not found: "reviewz"`.
func (m Message) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s]", m.Level, m.Code)
	var where []string
	if m.Resource.Kind != "" {
		id := m.Resource.Kind
		if m.Resource.Name != "" {
			id += " " + m.Resource.Namespace + "/" + m.Resource.Name
		}
		where = append(where, id)
	}
	if m.Resource.File != "" {
		f := m.Resource.File
		if m.Resource.Line > 0 {
			f += fmt.Sprintf(":%d", m.Resource.Line)
		}
		where = append(where, f)
	}
	if len(where) > 0 {
		b.WriteString(" (" + strings.Join(where, " ") + ")")
	}
	b.WriteString(" ")
	b.WriteString(m.Text)
	return b.String()
}
