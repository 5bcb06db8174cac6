package daemon

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/sidecar/identity"
)

// newResolver builds the resolver of the identity source in force, and
// describes it for the start-up log. A new source is one case here (and its
// name in config.go); the daemon discovers Reload and Close by interface.
func newResolver(ctx context.Context, cfg Config, log *zap.Logger) (identity.Resolver, string, error) {
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
		client, err := identity.NewK8sClient(cfg.Kubeconfig)
		if err != nil {
			return nil, "", err
		}
		// client-go logs through klog, process-wide: set it before the
		// informer starts, once, as this daemon is the process's only one.
		identity.KlogTo(log.Named("k8s"))
		k, err := identity.NewK8s(ctx, identity.K8sConfig{
			Client:       client,
			NodeName:     cfg.K8sNodeName,
			ProjectFrom:  cfg.K8sProjectFrom,
			ProjectLabel: cfg.K8sProjectLabel,
			Logger:       log.Named("identity"),
		})
		if err != nil {
			return nil, "", err
		}
		from := "label " + cfg.K8sProjectLabel
		if cfg.K8sProjectFrom == identity.ProjectFromNamespace {
			from = "namespace"
		}
		return k, fmt.Sprintf("k8s pods of node %s, project from their %s", cfg.K8sNodeName, from), nil
	}
	return nil, "", fmt.Errorf("--identity %q: no resolver", kind)
}
