# Cluster targets (Slurm, Apptainer), included by the Makefile: `include mk/cluster.mk`.
# Uses BIN, KIT and DEMO_CONFIG from the Makefile.
IMAGE ?= build/dream-hpc.sif
IMAGE_REFS := build/image-refs
IMAGE_META := build/image-meta
# The survey whose references go into the image; CRDS_SYNC=1 syncs them for real (needs network).
CRDS_CACHE_CONFIG ?= $(DEMO_CONFIG)
CRDS_SYNC ?=
# `make container-rootfs`: the same image built without Apptainer (debootstrap + chroot), as SquashFS.
ROOTFS_OUT ?= build/container

.PHONY: sysdeps crds-cache image-meta container container-rootfs

# System packages for the Slurm tests, shell lint and image build (slurm-wlm, munge, shellcheck,
# debootstrap, squashfs-tools): root + apt only;
# elsewhere it says so and the Slurm tests skip naming the reason.
sysdeps:
	scripts/install-sysdeps.sh

# The read-only reference data baked into the image: the offline kit, or (CRDS_SYNC=1) a real
# `crds sync` of exactly the references CRDS_CACHE_CONFIG's exposures use.
crds-cache: $(BIN)/.installed $(if $(CRDS_SYNC),,$(KIT)/.built)
	KIT=$(KIT) DREAM_PYTHON=$(BIN)/python scripts/make-crds-cache.sh $(if $(CRDS_SYNC),--sync) \
		$(CRDS_CACHE_CONFIG) $(IMAGE_REFS)

# The commit the image is built from (its dream-hpc.git_commit label), "-dirty" with uncommitted changes.
image-meta:
	mkdir -p $(IMAGE_META)
	{ git rev-parse HEAD 2>/dev/null || echo unknown; } | tr -d '\n' > $(IMAGE_META)/git_commit
	if [ -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then printf -- '-dirty' >> $(IMAGE_META)/git_commit; fi

# The image: lock-pinned environment, MPICH wheel, the staged cache; %test runs at the end of the build.
container:
	@command -v apptainer >/dev/null || { echo "error: apptainer is not installed: see https://apptainer.org/docs/admin/main/installation.html (Debian/Ubuntu: the apptainer .deb from its GitHub releases; HPC sites: 'module load apptainer'), or build on a machine that has it and copy $(IMAGE); without it, 'make container-rootfs' builds the same image as SquashFS"; exit 1; }
	$(MAKE) crds-cache image-meta
	apptainer build --fakeroot --force $(IMAGE) containers/dream-hpc.def
	@echo "built $(IMAGE) (sha256 $$(sha256sum $(IMAGE) | cut -c1-16)...); try: apptainer run $(IMAGE) versions --check"

# The same definition without Apptainer (root): debootstrap a Debian 12 minbase, run its %files and
# %post (containers/recipe.sh) with chroot, write %environment/%labels/%test as Apptainer does, pack
# as SquashFS, run %test inside it offline. Skipped when nothing it is built from changed.
# Run inside it, offline: containers/image-chroot.sh run $(ROOTFS_OUT)/dream-hpc.sqfs --bind DIR -- dream-hpc ...
container-rootfs: $(BIN)/.installed
	scripts/install-sysdeps.sh debootstrap squashfs-tools
	$(MAKE) crds-cache image-meta
	DREAM_PYTHON=$(BIN)/python containers/build-rootfs.sh $(ROOTFS_OUT)
