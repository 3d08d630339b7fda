package jwtauthn

import "sync"

// tokenCache is a provider's verified-token cache (Envoy's jwt_cache_config): token string →
// parsed token whose signature checked out, and the key set that checked it. A hit skips parsing
// and the signature; issuer, time and audience are checked on every request still. Unlike Envoy a
// hit counts only while the provider still has that key set, so a token signed by a key that was
// rotated out stops passing once the new set arrives. Bounded: when full, an arbitrary entry makes
// room (Go's map order is random, so this is random eviction).
type tokenCache struct {
	mu      sync.RWMutex
	m       map[string]verified
	max     int
	maxSize int
}

type verified struct {
	t  *token
	ks *keySet
}

func newTokenCache(max, maxTokenSize int) *tokenCache {
	return &tokenCache{m: make(map[string]verified), max: max, maxSize: maxTokenSize}
}

func (c *tokenCache) get(raw string) verified {
	c.mu.RLock()
	v := c.m[raw]
	c.mu.RUnlock()
	return v
}

func (c *tokenCache) put(t *token, ks *keySet) {
	if len(t.raw) > c.maxSize || ks == nil {
		return
	}
	c.mu.Lock()
	if _, ok := c.m[t.raw]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[t.raw] = verified{t, ks}
	c.mu.Unlock()
}

func (c *tokenCache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}
