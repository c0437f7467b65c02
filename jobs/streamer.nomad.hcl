# One player's stream: a streamer task on a GPU node (or any node with
# gpu = false), found through Consul as "metal-streamer".
#
# The gateway registers one such job per session (job id
# "metal-session-<session id>"), passing these variables; an operator can
# also run it by hand to try a node:
#
#   nomad job run -var session_id=try -var driver=raw_exec -var gpu=false \
#     -var metal_binary=$PWD/bin/metal jobs/streamer.nomad.hcl
#
# It is a batch job: the streamer exits 0 after its idle timeout and the job
# is complete. It never restarts or moves: a session that loses its node or
# its process fails visibly instead of silently starting over elsewhere.

variable "session_id" {
  type        = string
  description = "Session this streamer serves; tokens for any other session are refused."

  validation {
    condition     = strlen(var.session_id) > 0 && strlen(var.session_id) <= 64 && trim(var.session_id, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
    error_message = "The session_id must be 1-64 characters of a-z, 0-9 and -."
  }
}

variable "datacenter" {
  type        = string
  description = "Datacenter (edge) to place the stream in."
  default     = "dc1"
}

variable "driver" {
  type        = string
  description = "Task driver: docker (production, NVIDIA runtime) or raw_exec (local development and tests)."
  default     = "docker"

  validation {
    condition     = contains(["docker", "raw_exec"], var.driver)
    error_message = "The driver must be \"docker\" or \"raw_exec\"."
  }
}

variable "image" {
  type        = string
  description = "Container image with metal, GStreamer and the desktop (docker driver)."
  default     = "ghcr.io/metal-stream/metal-desktop:latest"
}

variable "metal_binary" {
  type        = string
  description = "Absolute path of the metal binary on the client (raw_exec driver)."
  default     = "/usr/local/bin/metal"
}

variable "gpu" {
  type        = bool
  description = "Require an NVIDIA GPU with an H.264 encoder (NVENC). Off for GPU-less development machines."
  default     = true
}

variable "encoder" {
  type        = string
  description = "Video encoder: empty for nvenc (NVENC or fail) with gpu, x264enc without; or one of nvenc, nvcudah264enc, nvh264enc, x264enc, vp8enc. The service's encoder meta is this, and the streamer runs it or exits."
  default     = ""

  validation {
    condition     = contains(["", "nvenc", "nvcudah264enc", "nvh264enc", "x264enc", "vp8enc"], var.encoder)
    error_message = "The encoder must be empty, nvenc, nvcudah264enc, nvh264enc, x264enc or vp8enc."
  }
}

variable "resolution" {
  type        = string
  description = "Capture and encode size, WIDTHxHEIGHT: the screen's size at the start and the largest the player's window can make it (the CPU and memory reservation is for it)."
  default     = "1280x720"

  validation {
    condition     = contains(["1280x720", "1920x1080"], var.resolution)
    error_message = "The resolution must be 1280x720 or 1920x1080."
  }
}

variable "fixed_resolution" {
  type        = bool
  description = "Keep the screen at the resolution instead of following the player's window (RandR, at most the resolution, which the reservation is for)."
  default     = false
}

variable "gamepad" {
  type        = string
  description = "The player's gamepads in the session: auto (virtual Xbox 360 controllers through uinput where the task can write /dev/uinput, otherwise keys), uinput, keys or off."
  default     = "auto"

  validation {
    condition     = contains(["auto", "uinput", "keys", "off"], var.gamepad)
    error_message = "The gamepad must be auto, uinput, keys or off."
  }
}

variable "fps" {
  type        = number
  description = "Frames per second."
  default     = 60

  validation {
    condition     = contains([30, 60], var.fps)
    error_message = "The fps must be 30 or 60."
  }
}

variable "ice_interfaces" {
  type        = string
  description = "Comma-separated interfaces the streamer gathers ICE candidates on; empty: all. `metal dev` sets lo: nothing it runs is reachable beyond this machine."
  default     = ""
}

variable "desktop" {
  type        = string
  description = "Shell command the streamer starts on its display: the session's desktop (for example \"openbox --startup xterm\"). Empty: none with raw_exec; the image's METAL_DESKTOP (Openbox and an xterm) with docker."
  default     = ""
}

variable "idle_timeout" {
  type        = string
  description = "The streamer exits (and the job completes) after this long without a browser."
  default     = "120s"
}

variable "public_ip" {
  type        = string
  description = "Address advertised in ICE candidates; empty uses the node's own addresses."
  default     = ""
}

variable "loopback" {
  type        = bool
  description = "Offer 127.0.0.1 candidates (local development and tests only)."
  default     = false
}

variable "demo" {
  type        = bool
  description = "Draw the moving demo scene instead of waiting for a desktop."
  default     = false
}

variable "cpu" {
  type        = number
  description = "CPU to reserve, MHz; 0 takes the measured reservation for the resolution and fps (local.reservations)."
  default     = 0

  validation {
    condition     = var.cpu >= 0
    error_message = "The cpu must be 0 (from the table) or a positive number of MHz."
  }
}

variable "memory" {
  type        = number
  description = "Memory to reserve, MiB; 0 takes the measured reservation for the resolution and fps (local.reservations)."
  default     = 0

  validation {
    condition     = var.memory >= 0
    error_message = "The memory must be 0 (from the table) or a positive number of MiB."
  }
}

locals {
  # What one streamer uses (capture, colour conversion, x264, Opus,
  # packetising, Xvfb and PulseAudio), measured with
  # tools/measure-reservations.sh: two streams at once on a 2-core machine,
  # as Nomad packs them, the demo scene with x264 (the worst case). CPU is
  # the 95th percentile per stream, rounded up to 100 MHz; memory is twice
  # the peak RSS, rounded up (a desktop or game image adds its own). The
  # README's Capacity section has the figures.
  reservations = {
    "1280x720@30"  = { cpu = 1000, memory = 384 }
    "1280x720@60"  = { cpu = 1600, memory = 384 }
    "1920x1080@30" = { cpu = 1800, memory = 512 }
    "1920x1080@60" = { cpu = 3500, memory = 512 }
  }
  reservation = local.reservations["${var.resolution}@${var.fps}"]
  cpu         = var.cpu > 0 ? var.cpu : local.reservation.cpu
  memory      = var.memory > 0 ? var.memory : local.reservation.memory

  # What the streamer runs: NVENC (either element) on an NVENC slot, x264
  # elsewhere, and nothing else: a streamer that cannot open the encoder it
  # was given exits with the reason instead of falling back, so the
  # service's "encoder" meta is always the encoder running.
  encoder = var.encoder != "" ? var.encoder : (var.gpu ? "nvenc" : "x264enc")

  args = concat([
    "streamer",
    "-encoder", local.encoder,
    "-listen", "${NOMAD_IP_http}:${NOMAD_PORT_http}",
    "-ice-port", "${NOMAD_PORT_webrtc}",
    "-session", var.session_id,
    "-resolution", var.resolution,
    "-fps", "${var.fps}",
    "-idle-timeout", var.idle_timeout,
    "-public-ip", var.public_ip,
    "-loopback=${var.loopback}",
    "-demo=${var.demo}",
    "-fixed-resolution=${var.fixed_resolution}",
    "-gamepad", var.gamepad,
    "-single-use-tokens",
    ], var.desktop == "" ? [] : [
    "-desktop", var.desktop,
    ], var.ice_interfaces == "" ? [] : [
    "-ice-interfaces", var.ice_interfaces,
  ])
  # The session-token key lives in a Nomad variable the gateway writes for
  # this job only; it never appears in the job specification.
  key_template = <<-EOT
    {{ with nomadVar "nomad/jobs/metal-session-${var.session_id}" }}METAL_TOKEN_KEY={{ .token_key }}{{ end }}
  EOT
}

job "metal-streamer" {
  datacenters = [var.datacenter]
  type        = "batch"

  meta {
    session = var.session_id
  }

  group "stream" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    network {
      port "http" {}
      port "webrtc" {}
    }

    service {
      name     = "metal-streamer"
      provider = "consul"
      port     = "http"
      tags     = ["session-${var.session_id}"]

      meta {
        session = var.session_id
        encoder = local.encoder
      }

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "2s"
        timeout  = "1s"
      }
    }

    task "streamer" {
      driver = var.driver

      # raw_exec runs the metal binary on the client (development, tests);
      # docker runs the desktop image with the NVIDIA runtime (production).
      dynamic "config" {
        for_each = var.driver == "raw_exec" ? [1] : []

        content {
          command = var.metal_binary
          args    = local.args
        }
      }

      dynamic "config" {
        for_each = var.driver == "docker" ? [1] : []

        # Host networking: the streamer advertises the node's own addresses
        # in its ICE candidates and its one UDP port is the node's, with no
        # NAT, docker-proxy or port mapping between the player and it.
        content {
          image        = var.image
          runtime      = var.gpu ? "nvidia" : "runc"
          network_mode = "host"
          # An init as PID 1 reaps what the task orphans (a desktop
          # started in the background).
          init = true
          args = local.args
        }
      }

      # The image's HEALTHCHECK reads this (docker ps shows it); Nomad's own
      # check is the service's.
      env = {
        METAL_HEALTH_URL = "http://${NOMAD_ADDR_http}/healthz"
      }

      template {
        data        = local.key_template
        destination = "secrets/metal.env"
        env         = true
      }

      resources {
        cpu    = local.cpu
        memory = local.memory

        dynamic "device" {
          for_each = var.gpu ? ["nvidia/gpu"] : []
          iterator = gpu
          labels   = [gpu.value]

          # One encoder slot: the metal-nvidia plugin offers each NVENC
          # GPU as several instances ("<uuid>/slot-<k>"), so sessions
          # share a GPU up to its encoder's limit.
          content {
            count = 1

            constraint {
              attribute = "${device.attr.nvenc_h264}"
              value     = "true"
            }

            affinity {
              attribute = "${device.attr.memory}"
              operator  = ">="
              value     = "16 GiB"
              weight    = 50
            }
          }
        }
      }

      kill_timeout = "10s"
    }
  }
}
