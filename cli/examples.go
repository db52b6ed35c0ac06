package cli

import "github.com/spf13/cobra"

// examples are the Example sections of the commands that do not set their
// own, by command path. TestEveryCommandHasExample fails when a command of
// the tree has neither, so a new command cannot ship without one.
var examples = map[string]string{
	"tidemark policies": `  tidemark policies
  tidemark policies -o json`,
	"tidemark policy": `  tidemark policy apply -f /etc/tidemark/policies.yaml --dry-run
  tidemark policy show prod-db`,
	"tidemark policy apply": `  tidemark policy apply -f /etc/tidemark/policies.yaml --dry-run
  tidemark policy apply -f /etc/tidemark/policies.yaml`,
	"tidemark policy delete": `  tidemark policy delete scratch-nightly`,
	"tidemark policy show": `  tidemark policy show prod-db
  tidemark policy show prod-db -o json`,
	"tidemark schedule": `  tidemark schedule
  tidemark schedule --instance db7 --next 3 -o json`,
	"tidemark status": `  tidemark status
  tidemark status --policy prod-db -o json`,
	"tidemark backup copy":   `  tidemark backup copy 20261203T101500Z-1a2b3c4d --to s3://backups-dr/prod?endpoint=minio-dr:9000 --with-binlog --wait`,
	"tidemark backup expire": `  tidemark backup expire 20261203T101500Z-1a2b3c4d --reason 'taken with the wrong settings'`,
	"tidemark backup pin":    `  tidemark backup pin 20261203T101500Z-1a2b3c4d --reason 'before the schema migration'`,
	"tidemark backup unpin":  `  tidemark backup unpin 20261203T101500Z-1a2b3c4d`,
	"tidemark repo copy": `  tidemark repo copy 20261203T101500Z-1a2b3c4d --from file:///srv/backups --to s3://backups-dr/prod?endpoint=minio-dr:9000 \
      --from-key-file /etc/tidemark/repo.key --to-key-file /etc/tidemark/dr.key --with-binlog`,
	"tidemark retention": `  tidemark retention plan --instance db7 --keep-daily 7 --keep-weekly 4 --pitr-window 72h
  tidemark retention apply --keep-daily 7 --keep-weekly 4 --pitr-window 72h`,
	"tidemark retention apply": `  tidemark retention apply --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --pitr-window 168h
  tidemark retention apply --copies s3://backups-dr/prod?endpoint=minio-dr:9000 --keep-weekly 8 -o json
  tidemark retention apply --policy prod-db`,
	"tidemark retention plan": `  tidemark retention plan --keep-daily 7 --keep-weekly 4 --pitr-window 72h
  tidemark retention plan --instance db7 --keep-last 5 -o json
  tidemark retention plan --policy prod-db -o json`,
	"tidemark": `  tidemark repo init --repo file:///srv/backups
  tidemark backup --mysql 'root@tcp(127.0.0.1:3306)/' --repo file:///srv/backups
  tidemark backups --controller c1:7400,c2:7400,c3:7400 --instance db7 -o json`,
	"tidemark agent": `  tidemark agent --config /etc/tidemark/agent.yaml
  tidemark agent --name db7 --controller c1:7400,c2:7400 --mysql 'backup@unix(/run/mysqld/mysqld.sock)/' \
      --credentials /etc/tidemark/creds --labels env=prod,tier=db`,
	"tidemark agent revoke": `  tidemark agent revoke db7
  tidemark agent revoke db7 -o json`,
	"tidemark agents": `  tidemark agents
  tidemark agents -o json | jq -r '.[] | select(.connected | not) | .name'`,
	"tidemark audit": `  tidemark audit --since 24h
  tidemark audit --since '2026-12-03 10:00:00' -o json`,
	"tidemark backup": `  tidemark backup --mysql 'root@tcp(127.0.0.1:3306)/' --repo file:///srv/backups --parallel 4
  tidemark backup --mysql 'root@tcp(127.0.0.1:3306)/' --repo file:///srv/backups --history   # system-versioned tables with every row version
  tidemark backup --engine mariabackup --mysql 'backup@unix(/run/mysqld/mysqld.sock)/' --repo s3://backups/prod?endpoint=minio:9000
  tidemark backup --instance db7 --history --wait -o json      # through TIDEMARK_CONTROLLER`,
	"tidemark engines": `  tidemark engines explain db7
  tidemark engines explain --mysql 'backup@unix(/run/mysqld/mysqld.sock)/'`,
	"tidemark engines explain": `  tidemark engines explain db7                      # through TIDEMARK_CONTROLLER
  tidemark engines explain db7 --engine snapshot,logical --portable -o json
  tidemark engines explain --mysql 'backup@unix(/run/mysqld/mysqld.sock)/'`,
	"tidemark backups": `  tidemark backups --repo file:///srv/backups
  tidemark backups --instance db7 -o json | jq -r '.[-1].id'   # through TIDEMARK_CONTROLLER`,
	"tidemark binlog": `  tidemark binlog start --instance db7
  tidemark binlog status --instance db7`,
	"tidemark binlog fetch": `  tidemark binlog fetch --repo file:///srv/backups --instance db7 --to /tmp/binlogs \
      --from 2026-12-03T09:00:00Z --until 2026-12-03T10:00:00Z
  mariadb-binlog /tmp/binlogs/*`,
	"tidemark binlog start": `  tidemark binlog start --instance db7
  tidemark binlog start --instance db7 --flush 200ms -o json`,
	"tidemark binlog status": `  tidemark binlog status --instance db7
  tidemark binlog status --repo file:///srv/backups -o json`,
	"tidemark binlog stop": `  tidemark binlog stop --instance db7`,
	"tidemark binlog stream": `  tidemark binlog stream --mysql 'repl@tcp(db7:3306)/' --repo file:///srv/backups
  tidemark binlog stream --mysql 'repl@tcp(db7a:3306)/,repl@tcp(db7b:3306)/' --instance db7 --repo s3://backups/binlog?endpoint=minio:9000`,
	"tidemark cluster": `  tidemark cluster status
  tidemark cluster transfer-leadership`,
	"tidemark cluster status": `  tidemark cluster status --controller c1:7400,c2:7400,c3:7400
  tidemark cluster status -o json | jq -r .leader`,
	"tidemark controller": `  tidemark controller --config /etc/tidemark/controller.yaml
  tidemark controller --node-id c1 --data-dir /var/lib/tidemark/c1 --grpc-addr 10.0.0.1:7400 \
      --raft-addr 10.0.0.1:7401 --bootstrap --ca-key-file /etc/tidemark/ca.key
  tidemark controller --node-id c2 --data-dir /var/lib/tidemark/c2 --grpc-addr 10.0.0.2:7400 \
      --raft-addr 0.0.0.0:7401 --raft-advertise-addr 10.0.0.2:7401 --join 10.0.0.1:7400 --join-token /etc/tidemark/join.token --ca-key-file /etc/tidemark/ca.key`,
	"tidemark dev": `  tidemark dev --mysql 'root@tcp(127.0.0.1:3306)/'
  tidemark dev --mysql 'root@tcp(127.0.0.1:3306)/' --data-dir /tmp/tm -o json`,
	"tidemark instances": `  tidemark instances
  tidemark instances -o json | jq -r '.[] | select(.binlog == null) | .name'`,
	"tidemark job": `  tidemark job watch 20261203T100000Z-c81e49ce
  tidemark job cancel 20261203T100000Z-c81e49ce`,
	"tidemark jobs": `  tidemark jobs --instance db7
  tidemark jobs -o json | jq -r '.[] | select(.state == "failed") | .id'`,
	"tidemark login": `  tidemark login --token-file alice.token --controller c1:7400
  tidemark login --token-file alice.token -o json`,
	"tidemark repo": `  tidemark repo init --repo file:///srv/backups
  tidemark repo verify --repo file:///srv/backups --read-data`,
	"tidemark repo reconcile": `  tidemark repo reconcile --repo s3://backups/prod?endpoint=minio:9000 --controller c1:7400,c2:7400 --dry-run
  tidemark repo reconcile --repo s3://backups/prod?endpoint=minio:9000 --controller c1:7400 --grace 1h -o json`,
	"tidemark repo gc": `  tidemark repo gc --repo file:///srv/backups
  tidemark repo gc --repo file:///srv/backups --dry-run -o json`,
	"tidemark repo init": `  tidemark repo init --repo file:///srv/backups
  head -c 32 /dev/urandom > repo.key && tidemark repo init --repo s3://backups/prod?endpoint=minio:9000 --encrypt --key-file repo.key`,
	"tidemark repo key": `  tidemark repo key list --repo file:///srv/backups --key-file repo.key
  tidemark repo key rotate --repo file:///srv/backups --key-file repo.key`,
	"tidemark repo key list":   `  tidemark repo key list --repo file:///srv/backups --passphrase-file repo.pass -o json`,
	"tidemark repo key remove": `  tidemark repo key remove 3f9a0c1d --repo file:///srv/backups --key-file repo.key`,
	"tidemark repo key rotate": `  tidemark repo key rotate --repo file:///srv/backups --key-file repo.key`,
	"tidemark repo stats": `  tidemark repo stats --repo file:///srv/backups
  tidemark repo stats --repo file:///srv/backups -o json | jq .dedup_ratio`,
	"tidemark repo verify": `  tidemark repo verify --repo file:///srv/backups
  tidemark repo verify --repo file:///srv/backups --read-data -o json || echo "exit $? (3: damage found)"`,
	"tidemark restore": `  tidemark restore 20261203T093000Z-5b0e7f21 --repo file:///srv/backups --to-mysql 'root@tcp(127.0.0.1:3307)/'
  tidemark restore 20261203T093000Z-5b0e7f21 --to-instance db7-staging --rename-db shop:shop_copy
  tidemark restore --instance db7 --to-time '2026-12-03 10:14:59' --to-instance db7-staging -o json
  tidemark restore 20261203T093000Z-5b0e7f21 --repo file:///srv/backups --to-datadir /var/lib/mysql-new`,
	"tidemark token": `  tidemark token create --role agent --ttl 1h > db7.token`,
	"tidemark token create": `  tidemark token create --role agent --ttl 1h --uses 1 > db7.token
  tidemark token create --role operator --user alice --ttl 8h -o json`,
	"tidemark version": `  tidemark version
  tidemark version -o json`,
}

// applyExamples sets the Example of every command of the tree that has
// none from the examples table.
func applyExamples(c *cobra.Command) {
	if c.Example == "" {
		c.Example = examples[c.CommandPath()]
	}
	for _, sub := range c.Commands() {
		applyExamples(sub)
	}
}
