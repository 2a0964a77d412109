// Package exposure holds what the hub's and the agent's listening ports share:
// whether a listen address is reachable from other machines, and the token
// that guards a port that is.
package exposure

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// IsLoopback reports whether addr (host:port) listens on loopback only.
// An empty host or 0.0.0.0 listens on every interface: not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Authorized reports whether r carries token, as "Authorization: Bearer
// TOKEN" or as the password of basic authentication (what a browser
// sends). The comparison takes the same time whatever the guess.
func Authorized(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		_, got, ok = r.BasicAuth()
	}
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// Guard describes the token in front of a handler.
type Guard struct {
	Token string   // required; RequireToken with an empty token serves nothing
	Realm string   // the basic-authentication realm a browser shows, e.g. "freshet-hub"
	Key   string   // the config key, named in the refusal, e.g. "http.token_file"
	Open  []string // paths served without the token (probes)
	// Refused is called for each refused request (a counter).
	Refused func()
}

// RequireToken serves the paths in g.Open to anyone and every other
// request only with g.Token; the others get 401, with a challenge a browser
// answers by asking for a password, and are counted through g.Refused.
func RequireToken(next http.Handler, g Guard) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range g.Open {
			if r.URL.Path == p {
				next.ServeHTTP(w, r)
				return
			}
		}
		if g.Token != "" && Authorized(r, g.Token) {
			next.ServeHTTP(w, r)
			return
		}
		if g.Refused != nil {
			g.Refused()
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="`+g.Realm+`", charset="UTF-8"`)
		http.Error(w, "a token is required ("+g.Key+"): Authorization: Bearer TOKEN, or basic authentication with it as the password", http.StatusUnauthorized)
	})
}
