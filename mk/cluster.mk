# Cluster targets (Slurm, Apptainer), included by the Makefile: `include mk/cluster.mk`.
# Uses BIN, KIT and DEMO_CONFIG from the Makefile.
IMAGE ?= build/dream-hpc.sif
IMAGE_REFS := build/image-refs
IMAGE_META := build/image-meta
# The survey whose references go into the image; CRDS_SYNC=1 syncs them for real (needs network).
CRDS_CACHE_CONFIG ?= $(DEMO_CONFIG)
CRDS_SYNC ?=

.PHONY: sysdeps crds-cache container

# System packages for the Slurm tests and shell lint (slurm-wlm, munge, shellcheck): root + apt only;
# elsewhere it says so and the Slurm tests skip naming the reason.
sysdeps:
	scripts/install-sysdeps.sh

# The read-only reference data baked into the image: the offline kit, or (CRDS_SYNC=1) a real
# `crds sync` of exactly the references CRDS_CACHE_CONFIG's exposures use.
crds-cache: $(BIN)/.installed $(if $(CRDS_SYNC),,$(KIT)/.built)
	KIT=$(KIT) DREAM_PYTHON=$(BIN)/python scripts/make-crds-cache.sh $(if $(CRDS_SYNC),--sync) \
		$(CRDS_CACHE_CONFIG) $(IMAGE_REFS)

# The image: lock-pinned environment, MPICH wheel, the staged cache; %test runs at the end of the build.
container:
	@command -v apptainer >/dev/null || { echo "error: apptainer is not installed: see https://apptainer.org/docs/admin/main/installation.html (Debian/Ubuntu: the apptainer .deb from its GitHub releases; HPC sites: 'module load apptainer'), or build on a machine that has it and copy $(IMAGE)"; exit 1; }
	$(MAKE) crds-cache
	mkdir -p $(IMAGE_META)
	{ git rev-parse HEAD 2>/dev/null || echo unknown; } | tr -d '\n' > $(IMAGE_META)/git_commit
	if [ -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then printf -- '-dirty' >> $(IMAGE_META)/git_commit; fi
	apptainer build --fakeroot --force $(IMAGE) containers/dream-hpc.def
	@echo "built $(IMAGE) (sha256 $$(sha256sum $(IMAGE) | cut -c1-16)...); try: apptainer run $(IMAGE) versions --check"
