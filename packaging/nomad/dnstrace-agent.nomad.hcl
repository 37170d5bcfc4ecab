# dnstrace agent on every Nomad client (a system job). Bridge-mode tasks (the seed-000
# world: a dead nameserver first in the task's own resolv.conf) are seen from the host:
# the agent reads each task's resolv.conf through /proc/PID/root, and cgroup_skb on the
# cgroup v2 root sees the task's sockets whatever its network namespace.
# The Docker driver must allow privileged containers and host volumes:
#   plugin "docker" { config { allow_privileged = true  volumes { enabled = true } } }
job "dnstrace-agent" {
  type     = "system"
  priority = 90

  group "agent" {
    network {
      mode = "host"
      port "health" { static = 9465 }
      port "metrics" { static = 9464 }
    }

    service {
      name     = "dnstrace-agent"
      port     = "health"
      provider = "nomad"
      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "agent" {
      driver = "docker"
      # SIGTERM detaches every probe and flushes the spool.
      kill_signal  = "SIGTERM"
      kill_timeout = "60s"

      config {
        image        = "ghcr.io/dnstrace/dnstrace-agent:0.1.0"
        args         = ["--log-format", "json", "agent", "--config", "/local/dnstrace.toml"]
        privileged   = true
        pid_mode     = "host"
        network_mode = "host"
        volumes = [
          "/sys:/sys:ro",
          "/sys/fs/cgroup:/sys/fs/cgroup:ro",
          "/sys/kernel/tracing:/sys/kernel/tracing",
          "/sys/kernel/debug:/sys/kernel/debug",
          "/lib/modules:/lib/modules:ro",
          "/usr/src:/usr/src:ro",
          "/var/lib/dnstrace:/var/lib/dnstrace",
          "/run/dnstrace:/run/dnstrace",
        ]
      }

      env {
        DNSTRACE_AGENT_HOST_ID = "${node.unique.name}"
      }

      template {
        destination = "local/dnstrace.toml"
        data        = <<-EOT
          [agent]
          signals = ["lookups", "tcp", "drops", "conntrack"]
          dns_ports = [53, 8600]
          {{ range nomadService "dnstrace-collector" }}collector = "{{ .Address }}:{{ .Port }}"{{ end }}
          tls_ca = "/secrets/ca.crt"
          spool_dir = "/var/lib/dnstrace/spool"
          spool_max_bytes = "512MiB"
          health_addr = ":9465"
          metrics_addr = ":9464"
          lock_file = "/run/dnstrace/agent.lock"
        EOT
      }

      # The CA that signed the collector's certificate (Nomad Variables: nomad/jobs/dnstrace-agent).
      template {
        destination = "secrets/ca.crt"
        data        = "{{ with nomadVar \"nomad/jobs/dnstrace-agent\" }}{{ .ca_crt }}{{ end }}"
      }

      resources {
        cpu    = 200
        memory = 512
      }
    }
  }
}
