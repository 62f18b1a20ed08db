package placement

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// ErrVersionConflict is returned by Cluster.Save when the stored placement
// changed since it was loaded.
var ErrVersionConflict = errors.New("placement: version conflict")

// Cluster is what the driver needs of the node it runs on. Its methods are
// called from the driver's goroutine only.
type Cluster interface {
	// Leading reports whether this node leads the global group; the driver
	// acts only then.
	Leading() bool
	// Load returns the stored placement, or nil if none was stored yet.
	Load(ctx context.Context) (*Placement, error)
	// Initial returns the placement to store when none exists.
	Initial() (*Placement, error)
	// Save stores p if the stored version is still p.Version-1 (or nothing
	// is stored and p.Version is 1); otherwise it returns ErrVersionConflict.
	Save(ctx context.Context, p *Placement) error
	// Observe returns the cluster as it is now.
	Observe(ctx context.Context) (ClusterState, error)
}

// DriverConfig configures a Driver.
type DriverConfig struct {
	Interval time.Duration
	Options  Options
	Logger   *slog.Logger
	// Wake, if set, starts a round early when it receives (for example on
	// a membership change).
	Wake <-chan struct{}
}

// Driver runs the planner on a ticker while its node leads the global group,
// and stores what it decides.
type Driver struct {
	c      Cluster
	cfg    DriverConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}
}

// StartDriver starts the driver's loop. Close stops it.
func StartDriver(c Cluster, cfg DriverConfig) *Driver {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{c: c, cfg: cfg, cancel: cancel, kick: make(chan struct{}, 1)}
	d.wg.Add(1)
	go d.run(ctx)
	return d
}

// Kick asks for a planning round now (for example after a node joined).
func (d *Driver) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Close stops the driver and waits for it. It is idempotent.
func (d *Driver) Close() {
	d.cancel()
	d.wg.Wait()
}

func (d *Driver) run(ctx context.Context) {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
		case <-d.cfg.Wake:
		}
		if !d.c.Leading() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*d.cfg.Interval+5*time.Second)
		if err := d.round(rctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrVersionConflict) {
			d.cfg.Logger.Warn("placement round failed", "error", err)
		}
		cancel()
	}
}

func (d *Driver) round(ctx context.Context) error {
	p, err := d.c.Load(ctx)
	if err != nil {
		return err
	}
	if p == nil {
		p, err = d.c.Initial()
		if err != nil {
			return err
		}
		p.Version = 1
		if err := d.c.Save(ctx, p); err != nil {
			return err
		}
		d.cfg.Logger.Info("stored the initial placement", "groups", len(p.Groups), "ranges", len(p.Topology.Ranges))
	}
	st, err := d.c.Observe(ctx)
	if err != nil {
		return err
	}
	next, decisions := Plan(p, st, d.cfg.Options)
	if next == nil {
		return nil
	}
	if err := d.c.Save(ctx, next); err != nil {
		return err
	}
	for _, dec := range decisions {
		d.cfg.Logger.Info("placement decision", "kind", dec.Kind, "group", dec.Group, "node", dec.Node, "reason", dec.Reason, "version", next.Version)
	}
	return nil
}
