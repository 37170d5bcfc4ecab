# dnstrace collector: one instance with an embedded DuckDB store on a host volume
# (client config: host_volume "dnstrace-collector" { path = "/var/lib/dnstrace-collector" }).
job "dnstrace-collector" {
  type = "service"

  group "collector" {
    count = 1

    network {
      port "grpc" { static = 7053 }
    }

    volume "data" {
      type   = "host"
      source = "dnstrace-collector"
    }

    service {
      name     = "dnstrace-collector"
      port     = "grpc"
      provider = "nomad"
      check {
        type     = "tcp"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "collector" {
      driver       = "docker"
      kill_timeout = "60s"

      config {
        image = "ghcr.io/dnstrace/dnstrace-collector:0.1.0"
        args  = ["--log-format", "json", "collector"]
        ports = ["grpc"]
      }

      volume_mount {
        volume      = "data"
        destination = "/var/lib/dnstrace"
      }

      env {
        DNSTRACE_CONFIG = "/local/dnstrace.toml"
      }

      template {
        destination = "local/dnstrace.toml"
        data        = <<-EOT
          [collector]
          listen = "0.0.0.0:7053"
          store = "duckdb:/var/lib/dnstrace/collector.duckdb"
          retention = "7d"
          tls_cert = "/secrets/tls.crt"
          tls_key = "/secrets/tls.key"
        EOT
      }

      template {
        destination = "secrets/tls.crt"
        data        = "{{ with nomadVar \"nomad/jobs/dnstrace-collector\" }}{{ .tls_crt }}{{ end }}"
      }
      template {
        destination = "secrets/tls.key"
        data        = "{{ with nomadVar \"nomad/jobs/dnstrace-collector\" }}{{ .tls_key }}{{ end }}"
      }

      resources {
        cpu    = 500
        memory = 2048
      }
    }
  }
}
