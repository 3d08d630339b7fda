package caserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/security/ca"
)

// Caller is who presented a token: a Kubernetes-style service account. The
// trust domain is the mesh's, not the token's.
type Caller struct {
	Namespace      string
	ServiceAccount string
	// By names the authenticator that vouched for the caller, for logs.
	By string
}

// Authenticator tells who presented a bearer token.
type Authenticator interface {
	// Authenticate returns the caller, or an error that does not contain
	// the token. An error wrapping ErrUnavailable means the authenticator
	// could not decide (its backend is down), not that the token is bad.
	Authenticate(ctx context.Context, token string) (Caller, error)
}

// ErrUnavailable marks authentication that failed for a reason other than
// the token: the caller should retry.
var ErrUnavailable = errors.New("authenticator unavailable")

// BootstrapTokens accepts the tokens the Authority minted with
// MintBootstrapToken (file mode).
type BootstrapTokens struct{ Authority *ca.Authority }

func (b BootstrapTokens) Authenticate(_ context.Context, token string) (Caller, error) {
	ns, sa, err := b.Authority.VerifyBootstrapToken(token)
	if err != nil {
		return Caller{}, err
	}
	return Caller{Namespace: ns, ServiceAccount: sa, By: "bootstrap-token"}, nil
}

// IstioCAAudience is the audience Istio's proxies request for the tokens
// they send the CA, and istiod's TokenReview asks for.
const IstioCAAudience = "istio-ca"

// TokenReview accepts Kubernetes service-account tokens, asking the API
// server with the TokenReview API (as istiod does). The control plane needs
// RBAC permission to create tokenreviews.authentication.k8s.io.
type TokenReview struct {
	Client kubernetes.Interface
	// Audiences the token must be for; nil means ["istio-ca"].
	Audiences []string
}

func (r TokenReview) Authenticate(ctx context.Context, token string) (Caller, error) {
	aud := r.Audiences
	if aud == nil {
		aud = []string{IstioCAAudience}
	}
	review, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: aud},
	}, metav1.CreateOptions{})
	if err != nil {
		return Caller{}, fmt.Errorf("%w: TokenReview: %w", ErrUnavailable, err)
	}
	st := review.Status
	if !st.Authenticated {
		why := st.Error
		if why == "" {
			why = "not authenticated"
		}
		return Caller{}, fmt.Errorf("TokenReview: %s", why)
	}
	// The API server returns the audiences the token is valid for among
	// those asked; none means it was not issued for us.
	if !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(aud, a) }) {
		return Caller{}, fmt.Errorf("TokenReview: the token is not for audience %v", aud)
	}
	parts := strings.Split(st.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return Caller{}, fmt.Errorf("TokenReview: user %q is not a service account", st.User.Username)
	}
	return Caller{Namespace: parts[2], ServiceAccount: parts[3], By: "kubernetes-tokenreview"}, nil
}
