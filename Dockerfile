# syntax=docker/dockerfile:1
# The tidemark binary (agent, controller and CLI in one) on a small Debian
# base, built with cgo so that compression runs on libzstd: a CGO_ENABLED=0
# build works but compresses at about half the speed (`tidemark version`
# names the implementation; the build stage checks it says libzstd).
#
#   docker build -t tidemark:dev --build-arg VERSION=$(git describe --tags --always) \
#       --build-arg COMMIT=$(git rev-parse HEAD) .
#   docker build --build-arg EXTRA_PACKAGES="mariadb-backup" ...   # agents running the mariabackup engine
#
# libzstd: github.com/DataDog/zstd compiles libzstd's C sources (vendored in
# the module, version = the module's) into the binary, so the builder needs a
# C compiler and the runtime image no libzstd package; the binary links only
# glibc. (Its build tag external_libzstd would link the system libzstd
# instead; Tidemark's tests do not build that way.)

ARG GO_VERSION=1.26.8
ARG DEBIAN=bookworm

FROM golang:${GO_VERSION}-${DEBIAN} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ENV CGO_ENABLED=1
RUN go build -trimpath \
      -ldflags "-s -w -X github.com/tidemark-backup/tidemark/internal/version.Version=${VERSION} -X github.com/tidemark-backup/tidemark/internal/version.Commit=${COMMIT}" \
      -o /out/tidemark ./cmd/tidemark \
 && /out/tidemark version \
 && /out/tidemark version | grep -q '^zstd: libzstd '

FROM debian:${DEBIAN}-slim
# ca-certificates: S3 over TLS. EXTRA_PACKAGES: the programs engines run on
# an agent's host (mariadb-backup for the mariabackup engine, mariadb-server
# for restore --to-datadir's prepare); of the server's major.minor series.
ARG EXTRA_PACKAGES=""
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates ${EXTRA_PACKAGES} \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 tidemark \
 && useradd --system --uid 65532 --gid tidemark --home-dir /var/lib/tidemark --shell /usr/sbin/nologin tidemark \
 && install -d -o tidemark -g tidemark -m 0700 /var/lib/tidemark
COPY --from=build /out/tidemark /usr/local/bin/tidemark
USER 65532:65532
WORKDIR /var/lib/tidemark
# 7400 gRPC (agents, CLI, other nodes), 7401 Raft, 9400 metrics and probes.
EXPOSE 7400 7401 9400
ENTRYPOINT ["/usr/local/bin/tidemark"]
CMD ["--help"]
