FROM python:3.11-slim
# sudo, setpriv/unshare (util-linux) and ip (iproute2): the local backend's one privileged step.
RUN apt-get update && apt-get install -y --no-install-recommends git openssh-client sudo util-linux iproute2 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripthut_site scripthut_site
COPY runs runs
COPY backends backends
COPY sources sources
COPY templates templates
COPY manage.py ./
# python-ldap (LDAP sign-in) compiles against the OpenLDAP and SASL headers.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libldap-dev libsasl2-dev \
    && pip install --no-cache-dir . && rm -rf /var/lib/apt/lists/*
# No SCRIPTHUT_CONFIG: a config named there must exist (`serve` refuses a missing one); the
# default ./scripthut.yaml is /app/scripthut.yaml, where docker-compose.yml mounts it.
ENV SCRIPTHUT_DATA_DIR=/data
# The portal runs as the unprivileged `scripthut` account. Its only way to other accounts is
# the root helper (README "The local backend and security"): installed root-owned, and the
# one sudoers rule allows it and nothing else. Accounts that local tasks may run as
# (run_as) must be in the group scripthut-tasks.
RUN groupadd --system scripthut-tasks \
    && useradd --system --create-home --home-dir /home/scripthut --shell /usr/sbin/nologin scripthut \
    && install -o root -g root -m 0755 backends/local/scripthut-runas /usr/local/libexec/scripthut-runas \
    && echo 'scripthut ALL=(root) NOPASSWD: /usr/local/libexec/scripthut-runas' > /etc/sudoers.d/scripthut-runas \
    && chmod 0440 /etc/sudoers.d/scripthut-runas \
    && install -d -o scripthut -g scripthut -m 0700 /data
USER scripthut
EXPOSE 8000
CMD ["scripthut", "serve", "--host", "0.0.0.0", "--port", "8000"]
