// SPDX-License-Identifier: GPL-2.0
/*
 * A virtio device without hardware behind it, for KUnit tests of virtio
 * drivers.
 *
 * The test creates the device with the feature bits and config space of its
 * choosing and registers it on the virtio bus, where the driver under test
 * binds to it. The test then plays the device: it takes the buffers the
 * driver made available on a split virtqueue, reads what the driver wrote,
 * writes what the "host" sends, returns each buffer with a used length of its
 * choosing (also wrong ones), raises virtqueue and config interrupts, and
 * breaks queues.
 *
 * Locking: @irq_lock is held (with interrupts off) while a virtqueue callback
 * runs, so synchronize_cbs() and del_vqs() wait for a callback in progress.
 * @lock guards the device side of every queue and the config space; it nests
 * inside @irq_lock. Only split rings without indirect descriptors or event
 * indices are supported: the device never offers those features.
 */

#include <linux/device.h>
#include <linux/io.h>
#include <linux/log2.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_test_device.h>

#define VTD_MAX_QUEUES 256
#define VTD_VENDOR 0x74736574	/* "test" */

struct vtd_queue {
	struct virtqueue *vq;
	u16 last_avail;
	u16 used_idx;
	unsigned int outstanding;
	atomic_t kicks;
};

struct virtio_test_device {
	struct virtio_device vdev;
	bool registered;
	u64 features;
	u8 status;
	u32 generation;
	unsigned int queue_size;
	unsigned int nr_queues;
	spinlock_t irq_lock;	/* held while a queue callback runs */
	spinlock_t lock;	/* device side of the queues, config space */
	size_t config_len;
	u8 *config;
	struct vtd_queue queues[VTD_MAX_QUEUES];
	/* queues to mark broken when find_vqs next creates them */
	DECLARE_BITMAP(break_on_find, VTD_MAX_QUEUES);
};

static struct virtio_test_device *to_vtd(struct virtio_device *vdev)
{
	return container_of(vdev, struct virtio_test_device, vdev);
}

static void vtd_get(struct virtio_device *vdev, unsigned int offset, void *buf,
		    unsigned int len)
{
	struct virtio_test_device *tdev = to_vtd(vdev);
	unsigned long flags;

	memset(buf, 0, len);
	spin_lock_irqsave(&tdev->lock, flags);
	if (offset < tdev->config_len)
		memcpy(buf, tdev->config + offset,
		       min_t(size_t, len, tdev->config_len - offset));
	spin_unlock_irqrestore(&tdev->lock, flags);
}

static void vtd_set(struct virtio_device *vdev, unsigned int offset,
		    const void *buf, unsigned int len)
{
	struct virtio_test_device *tdev = to_vtd(vdev);
	unsigned long flags;

	spin_lock_irqsave(&tdev->lock, flags);
	if (offset < tdev->config_len)
		memcpy(tdev->config + offset, buf,
		       min_t(size_t, len, tdev->config_len - offset));
	spin_unlock_irqrestore(&tdev->lock, flags);
}

static u32 vtd_generation(struct virtio_device *vdev)
{
	return READ_ONCE(to_vtd(vdev)->generation);
}

static u8 vtd_get_status(struct virtio_device *vdev)
{
	return READ_ONCE(to_vtd(vdev)->status);
}

static void vtd_set_status(struct virtio_device *vdev, u8 status)
{
	WRITE_ONCE(to_vtd(vdev)->status, status);
}

static void vtd_reset(struct virtio_device *vdev)
{
	WRITE_ONCE(to_vtd(vdev)->status, 0);
}

static bool vtd_notify(struct virtqueue *vq)
{
	struct virtio_test_device *tdev = to_vtd(vq->vdev);

	atomic_inc(&tdev->queues[vq->index].kicks);
	return true;
}

static void vtd_del_vqs(struct virtio_device *vdev)
{
	struct virtio_test_device *tdev = to_vtd(vdev);
	struct virtqueue *vq, *n;
	unsigned int i;

	spin_lock_irq(&tdev->irq_lock);
	spin_lock(&tdev->lock);
	for (i = 0; i < tdev->nr_queues; i++)
		tdev->queues[i].vq = NULL;
	tdev->nr_queues = 0;
	spin_unlock(&tdev->lock);
	spin_unlock_irq(&tdev->irq_lock);

	list_for_each_entry_safe(vq, n, &vdev->vqs, list)
		vring_del_virtqueue(vq);
}

static int vtd_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
			struct virtqueue *vqs[],
			struct virtqueue_info vqs_info[],
			struct irq_affinity *desc)
{
	struct virtio_test_device *tdev = to_vtd(vdev);
	unsigned int i, idx = 0;

	for (i = 0; i < nvqs; i++) {
		struct virtqueue *vq;

		if (!vqs_info[i].name) {
			vqs[i] = NULL;
			continue;
		}
		if (idx >= VTD_MAX_QUEUES)
			goto fail;
		vq = vring_create_virtqueue(idx, tdev->queue_size,
					    SMP_CACHE_BYTES, vdev, true, false,
					    vqs_info[i].ctx, vtd_notify,
					    vqs_info[i].callback,
					    vqs_info[i].name);
		if (!vq)
			goto fail;
		if (test_and_clear_bit(idx, tdev->break_on_find))
			__virtqueue_break(vq);
		spin_lock_irq(&tdev->lock);
		tdev->queues[idx] = (struct vtd_queue){ .vq = vq };
		tdev->nr_queues = idx + 1;
		spin_unlock_irq(&tdev->lock);
		vqs[i] = vq;
		idx++;
	}
	return 0;

fail:
	vtd_del_vqs(vdev);
	return -ENOMEM;
}

static void vtd_synchronize_cbs(struct virtio_device *vdev)
{
	struct virtio_test_device *tdev = to_vtd(vdev);

	spin_lock_irq(&tdev->irq_lock);
	spin_unlock_irq(&tdev->irq_lock);
}

static u64 vtd_get_features(struct virtio_device *vdev)
{
	return to_vtd(vdev)->features;
}

static int vtd_finalize_features(struct virtio_device *vdev)
{
	vring_transport_features(vdev);
	return 0;
}

static const char *vtd_bus_name(struct virtio_device *vdev)
{
	return "virtio-test";
}

/* A config write as a sleeping transport (vDPA, CCW, UML) does it. */
static void vtd_set_sleeping(struct virtio_device *vdev, unsigned int offset,
			     const void *buf, unsigned int len)
{
	might_sleep();
	vtd_set(vdev, offset, buf, len);
}

#define VTD_CONFIG_OPS(getter, setter)				\
	{							\
		.get = getter,					\
		.set = setter,					\
		.generation = vtd_generation,			\
		.get_status = vtd_get_status,			\
		.set_status = vtd_set_status,			\
		.reset = vtd_reset,				\
		.find_vqs = vtd_find_vqs,			\
		.del_vqs = vtd_del_vqs,				\
		.synchronize_cbs = vtd_synchronize_cbs,		\
		.get_features = vtd_get_features,		\
		.finalize_features = vtd_finalize_features,	\
		.bus_name = vtd_bus_name,			\
	}

/* Indexed by enum virtio_test_config_mode. */
static const struct virtio_config_ops vtd_config_ops[] = {
	[VIRTIO_TEST_CONFIG_ATOMIC] = VTD_CONFIG_OPS(vtd_get, vtd_set),
	[VIRTIO_TEST_CONFIG_SLEEPING] = VTD_CONFIG_OPS(vtd_get, vtd_set_sleeping),
	/* As virtio-pci modern without a device-config capability. */
	[VIRTIO_TEST_CONFIG_NONE] = VTD_CONFIG_OPS(NULL, NULL),
};

static void vtd_release(struct device *dev)
{
	struct virtio_test_device *tdev =
		container_of(dev, struct virtio_test_device, vdev.dev);

	kfree(tdev->config);
	kfree(tdev);
}

/**
 * virtio_test_device_create() - make a test device, not yet on the bus
 * @device_id: virtio device id the driver under test matches
 * @features: feature bits the device offers (VIRTIO_F_VERSION_1 included if
 *	wanted; ring features other than the split ring are not supported)
 * @config: initial config space, copied
 * @config_len: its size in bytes
 * @queue_size: entries per virtqueue, a power of two up to 1024
 *
 * Return: the device, or NULL if out of memory or the arguments are invalid.
 */
struct virtio_test_device *virtio_test_device_create(u32 device_id, u64 features,
						     const void *config,
						     size_t config_len,
						     unsigned int queue_size)
{
	struct virtio_test_device *tdev;

	if (!is_power_of_2(queue_size) || queue_size > 1024)
		return NULL;
	features &= ~(BIT_ULL(VIRTIO_F_RING_PACKED) |
		      BIT_ULL(VIRTIO_RING_F_INDIRECT_DESC) |
		      BIT_ULL(VIRTIO_RING_F_EVENT_IDX) |
		      BIT_ULL(VIRTIO_F_ACCESS_PLATFORM));
	tdev = kzalloc_obj(*tdev);
	if (!tdev)
		return NULL;
	/* @config may be dangling when empty (a Rust slice): do not read it then. */
	tdev->config = config_len ? kmemdup(config, config_len, GFP_KERNEL) :
				    kzalloc(1, GFP_KERNEL);
	if (!tdev->config) {
		kfree(tdev);
		return NULL;
	}
	tdev->config_len = config_len;
	tdev->features = features;
	tdev->queue_size = queue_size;
	spin_lock_init(&tdev->irq_lock);
	spin_lock_init(&tdev->lock);
	tdev->vdev.id.device = device_id;
	tdev->vdev.id.vendor = VTD_VENDOR;
	tdev->vdev.config = &vtd_config_ops[VIRTIO_TEST_CONFIG_ATOMIC];
	tdev->vdev.dev.release = vtd_release;
	return tdev;
}
EXPORT_SYMBOL_GPL(virtio_test_device_create);

/**
 * virtio_test_device_set_config_mode() - choose how the config space is reached
 * @tdev: the device, not yet registered
 * @mode: VIRTIO_TEST_CONFIG_ATOMIC (the default: ->set never sleeps, as on
 *	virtio-pci and virtio-mmio), VIRTIO_TEST_CONFIG_SLEEPING (->set may sleep,
 *	as on vDPA, CCW and UML) or VIRTIO_TEST_CONFIG_NONE (no ->get or ->set,
 *	as virtio-pci modern without a device-config capability)
 *
 * Return: 0, -EBUSY once registered, -EINVAL for an unknown mode.
 */
int virtio_test_device_set_config_mode(struct virtio_test_device *tdev,
				       enum virtio_test_config_mode mode)
{
	if (tdev->registered)
		return -EBUSY;
	if ((unsigned int)mode >= ARRAY_SIZE(vtd_config_ops))
		return -EINVAL;
	tdev->vdev.config = &vtd_config_ops[mode];
	return 0;
}
EXPORT_SYMBOL_GPL(virtio_test_device_set_config_mode);

/**
 * virtio_test_device_set_is_atomic() - whether a test device's config write
 *	never sleeps
 * @vdev: a virtio device
 *
 * Return: true if @vdev is a test device in VIRTIO_TEST_CONFIG_ATOMIC mode.
 */
bool virtio_test_device_set_is_atomic(struct virtio_device *vdev)
{
	return vdev->config == &vtd_config_ops[VIRTIO_TEST_CONFIG_ATOMIC];
}
EXPORT_SYMBOL_GPL(virtio_test_device_set_is_atomic);

/**
 * virtio_test_device_register() - put the device on the virtio bus
 * @tdev: the device
 *
 * A matching driver probes it before this returns. Whether the probe
 * succeeded is told by virtio_test_device_bound().
 *
 * Return: 0, or the error of register_virtio_device().
 */
int virtio_test_device_register(struct virtio_test_device *tdev)
{
	int ret;

	ret = register_virtio_device(&tdev->vdev);
	/* From here on the device is freed through put_device(). */
	tdev->registered = true;
	return ret;
}
EXPORT_SYMBOL_GPL(virtio_test_device_register);

/**
 * virtio_test_device_destroy() - unbind, unregister and free the device
 * @tdev: the device
 */
void virtio_test_device_destroy(struct virtio_test_device *tdev)
{
	if (!tdev->registered) {
		vtd_release(&tdev->vdev.dev);
		return;
	}
	if (device_is_registered(&tdev->vdev.dev))
		unregister_virtio_device(&tdev->vdev);
	else
		put_device(&tdev->vdev.dev);
}
EXPORT_SYMBOL_GPL(virtio_test_device_destroy);

/**
 * virtio_test_device_bound() - whether a driver's probe succeeded
 * @tdev: the device
 *
 * Return: true while a driver is bound.
 */
bool virtio_test_device_bound(struct virtio_test_device *tdev)
{
	return tdev->registered && READ_ONCE(tdev->vdev.dev.driver);
}
EXPORT_SYMBOL_GPL(virtio_test_device_bound);

/**
 * virtio_test_device_index() - the index the bus gave the device
 * @tdev: the device
 *
 * Return: the N of virtioN.
 */
u32 virtio_test_device_index(struct virtio_test_device *tdev)
{
	return tdev->vdev.index;
}
EXPORT_SYMBOL_GPL(virtio_test_device_index);

/**
 * virtio_test_device_status() - the status byte the driver last wrote
 * @tdev: the device
 *
 * Return: the VIRTIO_CONFIG_S_* bits.
 */
u8 virtio_test_device_status(struct virtio_test_device *tdev)
{
	return READ_ONCE(tdev->status);
}
EXPORT_SYMBOL_GPL(virtio_test_device_status);

/**
 * virtio_test_device_nr_queues() - how many virtqueues the driver set up
 * @tdev: the device
 *
 * Return: the number of queues, 0 before find_vqs() and after del_vqs().
 */
unsigned int virtio_test_device_nr_queues(struct virtio_test_device *tdev)
{
	unsigned long flags;
	unsigned int n;

	spin_lock_irqsave(&tdev->lock, flags);
	n = tdev->nr_queues;
	spin_unlock_irqrestore(&tdev->lock, flags);
	return n;
}
EXPORT_SYMBOL_GPL(virtio_test_device_nr_queues);

/* Called with @tdev->lock held. */
static struct vtd_queue *vtd_queue(struct virtio_test_device *tdev,
				   unsigned int q)
{
	if (q >= tdev->nr_queues || !tdev->queues[q].vq)
		return NULL;
	return &tdev->queues[q];
}

/* Called with @tdev->lock held. */
static u16 vtd_avail_idx(struct virtio_test_device *tdev, struct vtd_queue *tq)
{
	const struct vring *vr = virtqueue_get_vring(tq->vq);
	u16 idx = virtio16_to_cpu(&tdev->vdev, READ_ONCE(vr->avail->idx));

	/* Read the ring entries only after the index that publishes them. */
	virt_rmb();
	return idx;
}

/**
 * virtio_test_device_take() - take the next available buffer of a queue
 * @tdev: the device
 * @q: queue index
 * @out: where to copy what the driver wrote (its readable part)
 * @out_len: size of @out; the rest is not copied
 * @in: what to write into the buffer's writable part
 * @in_len: size of @in; the rest of the writable part is left untouched
 * @buf: filled with the head to complete and the sizes of both parts
 *
 * The buffer stays with the device until virtio_test_device_complete(); a
 * device that never completes it is a device that stopped consuming.
 *
 * Return: 0, -EAGAIN if the driver made nothing available, -ENODEV if the
 * queue does not exist, -EIO if the descriptor chain is malformed.
 */
int virtio_test_device_take(struct virtio_test_device *tdev, unsigned int q,
			    void *out, size_t out_len, const void *in,
			    size_t in_len, struct virtio_test_buf *buf)
{
	struct virtio_device *vdev = &tdev->vdev;
	const struct vring *vr;
	struct vtd_queue *tq;
	unsigned long flags;
	u32 readable = 0, writable = 0;
	unsigned int hops;
	int ret = 0;
	u16 head, i;

	spin_lock_irqsave(&tdev->lock, flags);
	tq = vtd_queue(tdev, q);
	if (!tq) {
		ret = -ENODEV;
		goto out;
	}
	if (vtd_avail_idx(tdev, tq) == tq->last_avail) {
		ret = -EAGAIN;
		goto out;
	}
	vr = virtqueue_get_vring(tq->vq);
	head = virtio16_to_cpu(vdev, vr->avail->ring[tq->last_avail % vr->num]);
	tq->last_avail++;
	for (i = head, hops = 0;; hops++) {
		struct vring_desc *d;
		u32 len, done;
		u16 dflags;
		u8 *p;

		if (i >= vr->num || hops >= vr->num) {
			ret = -EIO;
			goto out;
		}
		d = &vr->desc[i];
		len = virtio32_to_cpu(vdev, d->len);
		dflags = virtio16_to_cpu(vdev, d->flags);
		p = phys_to_virt(virtio64_to_cpu(vdev, d->addr));
		if (dflags & VRING_DESC_F_WRITE) {
			if (writable < in_len) {
				done = min_t(size_t, len, in_len - writable);
				memcpy(p, in + writable, done);
			}
			writable += len;
		} else {
			if (readable < out_len) {
				done = min_t(size_t, len, out_len - readable);
				memcpy(out + readable, p, done);
			}
			readable += len;
		}
		if (!(dflags & VRING_DESC_F_NEXT))
			break;
		i = virtio16_to_cpu(vdev, d->next);
	}
	tq->outstanding++;
	buf->head = head;
	buf->readable = readable;
	buf->writable = writable;
out:
	spin_unlock_irqrestore(&tdev->lock, flags);
	return ret;
}
EXPORT_SYMBOL_GPL(virtio_test_device_take);

/**
 * virtio_test_device_complete() - give a taken buffer back as used
 * @tdev: the device
 * @q: queue index
 * @head: the head from virtio_test_device_take()
 * @used_len: the used length to report, right or wrong
 *
 * Does not interrupt the driver; see virtio_test_device_interrupt().
 *
 * Return: 0, -ENODEV if the queue is gone, -EINVAL if nothing is taken.
 */
int virtio_test_device_complete(struct virtio_test_device *tdev, unsigned int q,
				u32 head, u32 used_len)
{
	struct virtio_device *vdev = &tdev->vdev;
	struct vring_used_elem *e;
	const struct vring *vr;
	struct vtd_queue *tq;
	unsigned long flags;
	int ret = 0;

	spin_lock_irqsave(&tdev->lock, flags);
	tq = vtd_queue(tdev, q);
	if (!tq) {
		ret = -ENODEV;
		goto out;
	}
	if (!tq->outstanding) {
		ret = -EINVAL;
		goto out;
	}
	vr = virtqueue_get_vring(tq->vq);
	e = &vr->used->ring[tq->used_idx % vr->num];
	e->id = cpu_to_virtio32(vdev, head);
	e->len = cpu_to_virtio32(vdev, used_len);
	tq->used_idx++;
	tq->outstanding--;
	/* The element before the index that publishes it. */
	virt_wmb();
	WRITE_ONCE(vr->used->idx, cpu_to_virtio16(vdev, tq->used_idx));
out:
	spin_unlock_irqrestore(&tdev->lock, flags);
	return ret;
}
EXPORT_SYMBOL_GPL(virtio_test_device_complete);

/*
 * Buffers of queue @q available and not yet taken (@avail) or taken and not
 * yet completed; 0 if the queue does not exist.
 */
static unsigned int vtd_count(struct virtio_test_device *tdev, unsigned int q,
			      bool avail)
{
	struct vtd_queue *tq;
	unsigned long flags;
	unsigned int n = 0;

	spin_lock_irqsave(&tdev->lock, flags);
	tq = vtd_queue(tdev, q);
	if (tq && avail)
		n = (u16)(vtd_avail_idx(tdev, tq) - tq->last_avail);
	else if (tq)
		n = tq->outstanding;
	spin_unlock_irqrestore(&tdev->lock, flags);
	return n;
}

/**
 * virtio_test_device_pending() - buffers available and not yet taken
 * @tdev: the device
 * @q: queue index
 *
 * Return: the count, 0 if the queue does not exist.
 */
unsigned int virtio_test_device_pending(struct virtio_test_device *tdev,
					unsigned int q)
{
	return vtd_count(tdev, q, true);
}
EXPORT_SYMBOL_GPL(virtio_test_device_pending);

/**
 * virtio_test_device_outstanding() - buffers taken and not yet completed
 * @tdev: the device
 * @q: queue index
 *
 * Return: the count, 0 if the queue does not exist.
 */
unsigned int virtio_test_device_outstanding(struct virtio_test_device *tdev,
					    unsigned int q)
{
	return vtd_count(tdev, q, false);
}
EXPORT_SYMBOL_GPL(virtio_test_device_outstanding);

/**
 * virtio_test_device_kicks() - notifications the driver sent on a queue
 * @tdev: the device
 * @q: queue index
 *
 * Return: the count since the queue was set up.
 */
unsigned int virtio_test_device_kicks(struct virtio_test_device *tdev,
				      unsigned int q)
{
	if (q >= VTD_MAX_QUEUES)
		return 0;
	return atomic_read(&tdev->queues[q].kicks);
}
EXPORT_SYMBOL_GPL(virtio_test_device_kicks);

/**
 * virtio_test_device_interrupt() - raise a queue's interrupt
 * @tdev: the device
 * @q: queue index
 *
 * As a device would, honours VRING_AVAIL_F_NO_INTERRUPT. The callback runs
 * with interrupts off, as from a real interrupt handler.
 *
 * Return: true if the driver's callback ran.
 */
bool virtio_test_device_interrupt(struct virtio_test_device *tdev,
				  unsigned int q)
{
	struct virtqueue *vq = NULL;
	struct vtd_queue *tq;
	unsigned long flags;
	bool ran = false;

	spin_lock_irqsave(&tdev->irq_lock, flags);
	spin_lock(&tdev->lock);
	tq = vtd_queue(tdev, q);
	if (tq) {
		const struct vring *vr = virtqueue_get_vring(tq->vq);
		u16 aflags = virtio16_to_cpu(&tdev->vdev,
					     READ_ONCE(vr->avail->flags));

		if (!(aflags & VRING_AVAIL_F_NO_INTERRUPT))
			vq = tq->vq;
	}
	spin_unlock(&tdev->lock);
	if (vq)
		ran = vring_interrupt(0, vq) == IRQ_HANDLED;
	spin_unlock_irqrestore(&tdev->irq_lock, flags);
	return ran;
}
EXPORT_SYMBOL_GPL(virtio_test_device_interrupt);

/**
 * virtio_test_device_of() - the test device behind a virtio device
 * @vdev: a virtio device
 *
 * Lets a driver under test play its device's side from its own callbacks,
 * for example raise an interrupt from inside probe.
 *
 * Return: the test device, or NULL if @vdev is not one.
 */
struct virtio_test_device *virtio_test_device_of(struct virtio_device *vdev)
{
	return vdev->config >= vtd_config_ops &&
	       vdev->config < vtd_config_ops + ARRAY_SIZE(vtd_config_ops) ?
		       to_vtd(vdev) : NULL;
}
EXPORT_SYMBOL_GPL(virtio_test_device_of);

/**
 * virtio_test_device_config_changed() - raise the config interrupt
 * @tdev: the device
 */
void virtio_test_device_config_changed(struct virtio_test_device *tdev)
{
	unsigned long flags;

	spin_lock_irqsave(&tdev->lock, flags);
	tdev->generation++;
	spin_unlock_irqrestore(&tdev->lock, flags);
	virtio_config_changed(&tdev->vdev);
}
EXPORT_SYMBOL_GPL(virtio_test_device_config_changed);

/**
 * virtio_test_device_config_read() - read the config space
 * @tdev: the device
 * @offset: byte offset
 * @buf: destination; bytes beyond the config space read as zero
 * @len: bytes to read
 */
void virtio_test_device_config_read(struct virtio_test_device *tdev,
				    unsigned int offset, void *buf, size_t len)
{
	vtd_get(&tdev->vdev, offset, buf, len);
}
EXPORT_SYMBOL_GPL(virtio_test_device_config_read);

/**
 * virtio_test_device_config_write() - change the config space as the device
 * @tdev: the device
 * @offset: byte offset
 * @buf: the new bytes; those beyond the config space are ignored
 * @len: bytes to write
 *
 * Does not interrupt the driver; see virtio_test_device_config_changed().
 */
void virtio_test_device_config_write(struct virtio_test_device *tdev,
				     unsigned int offset, const void *buf,
				     size_t len)
{
	vtd_set(&tdev->vdev, offset, buf, len);
}
EXPORT_SYMBOL_GPL(virtio_test_device_config_write);

/**
 * virtio_test_device_break_queue() - mark one virtqueue broken
 * @tdev: the device
 * @q: queue index
 *
 * Return: 0, or -ENODEV if the queue does not exist.
 */
int virtio_test_device_break_queue(struct virtio_test_device *tdev,
				   unsigned int q)
{
	struct virtqueue *vq = NULL;
	unsigned long flags;

	spin_lock_irqsave(&tdev->irq_lock, flags);
	spin_lock(&tdev->lock);
	if (vtd_queue(tdev, q))
		vq = tdev->queues[q].vq;
	spin_unlock(&tdev->lock);
	if (vq)
		__virtqueue_break(vq);
	spin_unlock_irqrestore(&tdev->irq_lock, flags);
	return vq ? 0 : -ENODEV;
}
EXPORT_SYMBOL_GPL(virtio_test_device_break_queue);

/**
 * virtio_test_device_break_queue_on_find() - mark a virtqueue broken when it
 * is next created
 * @tdev: the device
 * @q: queue index
 *
 * The next find_vqs (a probe, or a restore after a freeze) creates queue @q
 * broken, so the driver's first operations on it fail; later ones create it
 * working again.
 *
 * Return: 0, or -EINVAL if @q is beyond the queues a device can have.
 */
int virtio_test_device_break_queue_on_find(struct virtio_test_device *tdev,
					   unsigned int q)
{
	if (q >= VTD_MAX_QUEUES)
		return -EINVAL;
	set_bit(q, tdev->break_on_find);
	return 0;
}
EXPORT_SYMBOL_GPL(virtio_test_device_break_queue_on_find);

#ifdef CONFIG_PM_SLEEP
/* Runs a PM step of the virtio core as the PM core would: device lock held. */
static int vtd_pm(struct virtio_test_device *tdev,
		  int (*step)(struct virtio_device *dev))
{
	int ret;

	device_lock(&tdev->vdev.dev);
	ret = step(&tdev->vdev);
	device_unlock(&tdev->vdev.dev);
	return ret;
}
#endif

/**
 * virtio_test_device_freeze() - put the device through a system sleep's freeze
 * @tdev: the device
 *
 * Calls virtio_device_freeze() as the PM core would, with the device lock held.
 *
 * Return: the driver's answer, or -EOPNOTSUPP without CONFIG_PM_SLEEP.
 */
int virtio_test_device_freeze(struct virtio_test_device *tdev)
{
#ifdef CONFIG_PM_SLEEP
	return vtd_pm(tdev, virtio_device_freeze);
#else
	return -EOPNOTSUPP;
#endif
}
EXPORT_SYMBOL_GPL(virtio_test_device_freeze);

/**
 * virtio_test_device_restore() - wake the device from a system sleep
 * @tdev: the device
 *
 * Calls virtio_device_restore() as the PM core would, with the device lock
 * held. The driver finds fresh queues.
 *
 * Return: the driver's answer, or -EOPNOTSUPP without CONFIG_PM_SLEEP.
 */
int virtio_test_device_restore(struct virtio_test_device *tdev)
{
#ifdef CONFIG_PM_SLEEP
	return vtd_pm(tdev, virtio_device_restore);
#else
	return -EOPNOTSUPP;
#endif
}
EXPORT_SYMBOL_GPL(virtio_test_device_restore);

/**
 * virtio_test_device_reset_prepare() - start a transport reset of the device
 * @tdev: the device
 *
 * Calls virtio_device_reset_prepare() as virtio-pci does before a PCI function
 * reset: with the PCI device's lock held, not the virtio device's, so it can
 * run while the driver is being unbound.
 *
 * Return: the driver's answer, or -EOPNOTSUPP without reset_prepare.
 */
int virtio_test_device_reset_prepare(struct virtio_test_device *tdev)
{
	return virtio_device_reset_prepare(&tdev->vdev);
}
EXPORT_SYMBOL_GPL(virtio_test_device_reset_prepare);

/**
 * virtio_test_irqs_disabled() - whether local interrupts are off on this CPU
 *
 * For tests that check the context a driver callback runs in.
 *
 * Return: irqs_disabled().
 */
bool virtio_test_irqs_disabled(void)
{
	return irqs_disabled();
}
EXPORT_SYMBOL_GPL(virtio_test_irqs_disabled);
