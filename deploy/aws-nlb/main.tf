# An AWS Network Load Balancer in front of certgate, in TCP passthrough:
#
#   client --TLS+client cert--> NLB :443 (TCP) --PROXY v2 + the same TLS bytes--> certgate :8443
#                                 health check: HTTP GET /readyz --> certgate admin :9901
#
# The NLB never terminates TLS, so the client certificate reaches certgate. PROXY protocol v2
# carries the real client address; certgate (proxy_protocol: true, see certgate.yaml here)
# accepts the header only from the VPC CIDR and sends the address on as x-forwarded-for /
# x-real-ip. See README.md.

terraform {
  required_version = ">= 1.3"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80" # tcp_idle_timeout_seconds on aws_lb_listener
    }
  }
}

resource "aws_security_group" "nlb" {
  name        = "${var.name}-nlb"
  description = "certgate NLB: 443 from the allowed client networks"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "nlb_https" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.nlb.id
  description       = "mTLS clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_targets" {
  for_each          = toset(["8443", "9901"])
  security_group_id = aws_security_group.nlb.id
  description       = each.value == "8443" ? "certgate listener" : "certgate admin (health checks)"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_lb" "certgate" {
  name                             = var.name
  load_balancer_type               = "network"
  internal                         = var.internal
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  tags                             = var.tags
}

resource "aws_lb_target_group" "certgate" {
  name        = "${var.name}-8443"
  vpc_id      = var.vpc_id
  target_type = var.target_type
  protocol    = "TCP" # passthrough: TLS and the client certificate reach certgate untouched
  port        = 8443

  # Every connection starts with a PROXY v2 header holding the real client address
  # (certgate: proxy_protocol: true). Health checks are not wrapped.
  proxy_protocol_v2 = true
  # The NLB then connects from its own private addresses (inside var.vpc_cidr), which is what
  # certgate's proxy_protocol_from trusts. With client IP preservation on, the TCP source would
  # be the client and certgate would refuse the PROXY header.
  preserve_client_ip = false

  deregistration_delay = var.deregistration_delay

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = "9901" # certgate admin endpoint (admin.listen: 0.0.0.0:9901)
    path                = "/readyz"
    matcher             = "200" # 503 while draining or while a CRL is past its nextUpdate
    interval            = 10
    timeout             = 5
    healthy_threshold   = 3
    unhealthy_threshold = 2
  }

  tags = var.tags
}

resource "aws_lb_listener" "tls_passthrough" {
  load_balancer_arn = aws_lb.certgate.arn
  port              = 443
  protocol          = "TCP" # not TLS: an NLB TLS listener would terminate TLS and drop the client cert

  # The NLB forgets a TCP flow idle this long and answers its next packet with a RST. Keep
  # certgate's timeouts.idle (and timeouts.read) below it so certgate closes first.
  tcp_idle_timeout_seconds = var.tcp_idle_timeout_seconds

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.certgate.arn
  }

  tags = var.tags
}

resource "aws_lb_target_group_attachment" "certgate" {
  count            = length(var.target_ids)
  target_group_arn = aws_lb_target_group.certgate.arn
  target_id        = var.target_ids[count.index]
  port             = 8443
}

# Let the NLB reach the targets: traffic on 8443, health checks on 9901. The admin port must not
# be open to anyone else (it serves /metrics and /status without authentication).
resource "aws_vpc_security_group_ingress_rule" "targets_from_nlb" {
  for_each                     = var.target_security_group_id == null ? toset([]) : toset(["8443", "9901"])
  security_group_id            = var.target_security_group_id
  description                  = each.value == "8443" ? "certgate listener from the NLB" : "certgate admin health checks from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.nlb.id
}
