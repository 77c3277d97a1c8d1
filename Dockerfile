# The praas binary as a container image: the control plane (`praas up
# --backend kubernetes`) and the runtime of apps of the builtin image
# (`praas run-process`, which the Kubernetes backend starts in process pods).
# Static (no cgo), on a distroless base with no shell, as a non-root user.
#
#   docker build -t REGISTRY/praas:TAG .
#
# See docs/kubernetes.md.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/praas ./cmd/praas

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/praas /usr/local/bin/praas
# 65532 is distroless's "nonroot"; the pod specs also require a non-root user.
USER 65532:65532
# 8420: the control plane's REST and internal API; 7420: a process's data plane.
EXPOSE 8420 7420
ENTRYPOINT ["/usr/local/bin/praas"]
CMD ["up", "--backend", "kubernetes", "--listen", "0.0.0.0:8420", "--data", "/data"]
