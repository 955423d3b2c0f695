/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A virtio device without hardware, played from the device side by tests.
 */
#ifndef _LINUX_VIRTIO_TEST_DEVICE_H
#define _LINUX_VIRTIO_TEST_DEVICE_H

#include <linux/types.h>

struct virtio_test_device;

/**
 * struct virtio_test_buf - a buffer the test took from a virtqueue
 * @head: descriptor index to give back to virtio_test_device_complete()
 * @readable: bytes the driver offered for the device to read
 * @writable: bytes the driver offered for the device to write
 */
struct virtio_test_buf {
	u32 head;
	u32 readable;
	u32 writable;
};

/**
 * enum virtio_test_config_mode - how a test device's config space is reached
 * @VIRTIO_TEST_CONFIG_ATOMIC: ->get and ->set never sleep (virtio-pci, -mmio)
 * @VIRTIO_TEST_CONFIG_SLEEPING: ->set may sleep (vDPA, CCW, UML)
 * @VIRTIO_TEST_CONFIG_NONE: no ->get or ->set (virtio-pci modern without a
 *	device-config capability)
 */
enum virtio_test_config_mode {
	VIRTIO_TEST_CONFIG_ATOMIC,
	VIRTIO_TEST_CONFIG_SLEEPING,
	VIRTIO_TEST_CONFIG_NONE,
};

struct virtio_test_device *virtio_test_device_create(u32 device_id, u64 features,
						     const void *config,
						     size_t config_len,
						     unsigned int queue_size);
int virtio_test_device_set_config_mode(struct virtio_test_device *tdev,
				       enum virtio_test_config_mode mode);
int virtio_test_device_register(struct virtio_test_device *tdev);
void virtio_test_device_destroy(struct virtio_test_device *tdev);
bool virtio_test_device_bound(struct virtio_test_device *tdev);
u32 virtio_test_device_index(struct virtio_test_device *tdev);
u8 virtio_test_device_status(struct virtio_test_device *tdev);
unsigned int virtio_test_device_nr_queues(struct virtio_test_device *tdev);
int virtio_test_device_take(struct virtio_test_device *tdev, unsigned int q,
			    void *out, size_t out_len, const void *in,
			    size_t in_len, struct virtio_test_buf *buf);
int virtio_test_device_complete(struct virtio_test_device *tdev, unsigned int q,
				u32 head, u32 used_len);
unsigned int virtio_test_device_pending(struct virtio_test_device *tdev,
					unsigned int q);
unsigned int virtio_test_device_outstanding(struct virtio_test_device *tdev,
					    unsigned int q);
unsigned int virtio_test_device_kicks(struct virtio_test_device *tdev,
				      unsigned int q);
bool virtio_test_device_interrupt(struct virtio_test_device *tdev,
				  unsigned int q);
struct virtio_device;
struct virtio_test_device *virtio_test_device_of(struct virtio_device *vdev);
void virtio_test_device_config_changed(struct virtio_test_device *tdev);
void virtio_test_device_config_read(struct virtio_test_device *tdev,
				    unsigned int offset, void *buf, size_t len);
void virtio_test_device_config_write(struct virtio_test_device *tdev,
				     unsigned int offset, const void *buf,
				     size_t len);
int virtio_test_device_break_queue(struct virtio_test_device *tdev,
				   unsigned int q);
int virtio_test_device_break_queue_on_find(struct virtio_test_device *tdev,
					   unsigned int q);
int virtio_test_device_freeze(struct virtio_test_device *tdev);
int virtio_test_device_restore(struct virtio_test_device *tdev);
int virtio_test_device_reset_prepare(struct virtio_test_device *tdev);
bool virtio_test_irqs_disabled(void);
bool virtio_test_device_set_is_atomic(struct virtio_device *vdev);

#endif /* _LINUX_VIRTIO_TEST_DEVICE_H */
