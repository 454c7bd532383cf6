# The image the Kubernetes manifests run (deploy/kubernetes): widagent and
# widctl, static (no cgo), on distroless static as the nonroot user 65532.
# Build it with `make image`; releases build it with GoReleaser from
# deploy/docker/release.Dockerfile, which holds the same binaries.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X github.com/wid-project/wid/internal/version.Version=${VERSION}" \
	-o /out/ ./cmd/widagent ./cmd/widctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/widagent /out/widctl /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/bin:/bin
# The auth service runs as this user; the agent's DaemonSet runs as root to
# own the socket directory on the node (see deploy/kubernetes/20-agent.yaml).
USER 65532:65532
ENTRYPOINT ["widagent"]
CMD ["start"]
