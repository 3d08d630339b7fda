package kubesource

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// ReasonValidationFailed is the reason of the Warning Event recorded on an
// Istio resource Trellis does not serve because it is invalid.
const ReasonValidationFailed = "TrellisValidationFailed"

// maxEventMessage is the API server's limit on an Event's message.
const maxEventMessage = 1024

// eventReporter records Events through client-go's broadcaster, which
// sends them in the background and merges repeats.
type eventReporter struct {
	b   record.EventBroadcaster
	rec record.EventRecorder
}

func newEventReporter(ctx context.Context, kube kubernetes.Interface, component string) *eventReporter {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	return &eventReporter{b: b, rec: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component})}
}

func (r *eventReporter) warn(ref *corev1.ObjectReference, reason, message string) {
	if len(message) > maxEventMessage {
		message = message[:maxEventMessage-3] + "..."
	}
	r.rec.Event(ref, corev1.EventTypeWarning, reason, message)
}

func (r *eventReporter) shutdown() { r.b.Shutdown() }
