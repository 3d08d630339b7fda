package jwtauthn

import "sync"

// tokenCache is a provider's verified-token cache (Envoy's jwt_cache_config): token string →
// parsed token whose signature checked out. A hit skips parsing and the signature; issuer, time
// and audience are checked on every request still. Bounded: when full, an arbitrary entry makes
// room (Go's map order is random, so this is random eviction). Unlike Envoy it is emptied whenever
// the provider's JWKS is replaced, so a token signed by a key that was rotated out stops passing
// once the new key set arrives.
type tokenCache struct {
	mu      sync.RWMutex
	m       map[string]*token
	max     int
	maxSize int
}

func newTokenCache(max, maxTokenSize int) *tokenCache {
	return &tokenCache{m: make(map[string]*token), max: max, maxSize: maxTokenSize}
}

func (c *tokenCache) get(raw string) *token {
	c.mu.RLock()
	t := c.m[raw]
	c.mu.RUnlock()
	return t
}

func (c *tokenCache) put(t *token) {
	if len(t.raw) > c.maxSize {
		return
	}
	c.mu.Lock()
	if _, ok := c.m[t.raw]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[t.raw] = t
	c.mu.Unlock()
}

func (c *tokenCache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}
