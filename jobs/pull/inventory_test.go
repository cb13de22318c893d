package pull

import (
	"slices"
	"strings"
	"testing"

	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

func testInventory() *inventory.Inventory {
	return &inventory.Inventory{
		File: "/etc/v2backup/inventory.toml",
		Site: inventory.Site{Partition: "/v01/backup"},
		Servers: []inventory.Server{
			{Name: hostA},
			{Name: hostB, SSH: "backup@odin.example.net", SSHPort: 2222, RemoteView: "/srv/view", Partition: "/v02/backup"},
		},
		Apps: []inventory.App{
			{Name: "hydro", Server: hostA, VM: "web", Relpath: "demo.softxs.ch/hydro"},
			{Name: "git", Server: hostB, Relpath: "odin.softxs.ch/git"},
		},
		BackupServers: []inventory.BackupServer{{
			Name: backup, Pulls: []tiers.Server{hostA, hostB}, Parallel: 2,
			Identity: "/root/.ssh/id_v2backup", KnownHosts: "/etc/v2backup/known_hosts", RsyncOptions: []string{"--bwlimit=50000"},
		}},
	}
}

func TestFromInventory(t *testing.T) {
	o, err := FromInventory(testInventory(), backup, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.Partition != "/v01/backup" || o.HistoryDir != "/v01/backup/history" || o.Parallel != 2 || o.Identity != "/root/.ssh/id_v2backup" ||
		o.KnownHosts != "/etc/v2backup/known_hosts" || !slices.Equal(o.RsyncOptions, []string{"--bwlimit=50000"}) {
		t.Errorf("options = %+v", o)
	}
	if len(o.Hosts) != 2 {
		t.Fatalf("hosts = %+v", o.Hosts)
	}
	a, b := o.Hosts[0], o.Hosts[1]
	if a.SSH != "root@zg-3.softxs.ch" || a.Port != 0 || a.View != "/v01/backup/view" || len(a.Apps) != 1 || a.Apps[0] != (App{"hydro", "web", "demo.softxs.ch/hydro"}) {
		t.Errorf("zg-3 = %+v", a)
	}
	if b.SSH != "backup@odin.example.net" || b.Port != 2222 || b.View != "/srv/view" || b.Apps[0].VM != tiers.NoVM {
		t.Errorf("odin = %+v", b)
	}

	one, err := FromInventory(testInventory(), backup, []tiers.Server{hostB})
	if err != nil || len(one.Hosts) != 1 || one.Hosts[0].Server != hostB {
		t.Errorf("only odin: %+v, %v", one.Hosts, err)
	}
}

func TestFromInventoryErrors(t *testing.T) {
	inv := testInventory()
	if _, err := FromInventory(inv, hostA, nil); err == nil || !strings.Contains(err.Error(), "zg-3.softxs.ch is not a backup server") {
		t.Errorf("host as backup server: %v", err)
	}
	if _, err := FromInventory(inv, backup, []tiers.Server{"other.softxs.ch"}); err == nil || !strings.Contains(err.Error(), "does not pull other.softxs.ch") {
		t.Errorf("unknown host: %v", err)
	}
	inv.BackupServers[0].Pulls = append(inv.BackupServers[0].Pulls, "ghost.softxs.ch")
	if _, err := FromInventory(inv, backup, nil); err == nil || !strings.Contains(err.Error(), "pulls ghost.softxs.ch, which is not a [[server]]") {
		t.Errorf("ghost: %v", err)
	}
}
