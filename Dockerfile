# Build and run the agent server. `docker build -t production-agent .`
FROM rust:1.88 AS builder
WORKDIR /app
COPY . .
RUN cargo build --release -p production-agent

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=builder /app/target/release/production-agent /usr/local/bin/
EXPOSE 8080 9090
USER 65534
CMD ["production-agent"]
