package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvsidecar/kvsidecar/sidecar/identity"
)

// newResolver builds the resolver of the identity source in force, and
// describes it for the start-up log. A new source is one case here (and its
// name in config.go); the daemon discovers Reload and Close by interface.
func newResolver(ctx context.Context, cfg Config) (identity.Resolver, string, error) {
	kind, err := cfg.identity()
	if err != nil {
		return nil, "", err
	}
	switch kind {
	case IdentityStatic:
		return identity.Static{Project: cfg.Project}, "static project " + cfg.Project, nil
	case IdentityUIDMap:
		m, err := identity.LoadUIDMap(ctx, cfg.UIDMap)
		if err != nil {
			return nil, "", err
		}
		return m, fmt.Sprintf("uid map %s (%d rules)", cfg.UIDMap, m.Len()), nil
	case IdentityK8s:
		return nil, "", errors.New("--identity k8s: the Kubernetes pod resolver is not built yet; use --identity static (--project) or --identity uidmap (--uid-map)")
	}
	return nil, "", fmt.Errorf("--identity %q: no resolver", kind)
}
